"""Tutorial 10: pack pretrained models you downloaded: several outputs, probabilities, no labels.

Run: python tutorials/10_pack_pretrained_models.py [OUT_DIR]

Models people download are not the suite's: they come trained, without their training data,
and with several outputs (a detector gives a score and a box), some of them probabilities
(the graph ends in a Softmax). Here, two of MTCNN's face-detector stages as facenet-pytorch
releases them on PyPI (P-Net: a 2-class score map and a box map from a 12x12 crop; R-Net:
score and box from 24x24) and PaddleOCR's text direction classifier as an ONNX file
(rapidocr-onnxruntime's), packed label-free on crops of real photos: each model is distilled
toward its own outputs, each output with the loss its kind wants, and every output is
reported on held-out crops. What `wvirt pack NAME=MODEL --data NAME=CROPS.npz --output-kind
NAME:OUTPUT=KIND --lr 1e-4` does, in Python. `apps.pretrained` downloads the three wheels once
(the network, the first time). The full-size numbers: `python -m benchmarks.pretrained`.
"""

import os
import sys
import tempfile

import numpy as np
import torch
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.apps import pretrained
from tvm_weightvirt.frontend.outputs import output_kinds
from tvm_weightvirt.frontend.twin import TorchTwin

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
os.makedirs(out_dir, exist_ok=True)

# 1. Intake. The torch stages with their released weights (a module, as a user builds it from
#    the project's code), its outputs named; the classifier straight from its ONNX file, whose
#    input dimensions are symbolic: the shape to compile for is given.
tasks = [pretrained.mtcnn_task("pnet"), pretrained.mtcnn_task("rnet")]
onnx_path = os.path.join(out_dir, "direction.onnx")
with pretrained.wheel("rapidocr-onnxruntime") as whl, open(onnx_path, "wb") as f:
    f.write(whl.read("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"))
tasks.append(wv.Task.from_onnx(onnx_path, name="direction", shape_dict={"x": [1, 3, 48, 192]}))

# 2. What each output holds, read from the graph: a trailing Softmax makes probabilities
#    (distilled by KL between them, not between softmaxes of them), anything else in a model
#    of several outputs is values (MSE over its mean square). Say otherwise with `outputs=`.
for task in tasks:
    for kind in output_kinds(task):
        print(f"{task.name}.{kind.name} {list(kind.shape)}: {kind.describe()} ({kind.why})")

# 3. Data without labels: photo crops at each model's input size, normalised as each expects.
data = {
    "pnet": wv.TaskData(pretrained.mtcnn_inputs("pnet", 300, seed=0)),
    "rnet": wv.TaskData(pretrained.mtcnn_inputs("rnet", 300, seed=1)),
    "direction": wv.TaskData(pretrained.ocr_inputs("ocr_cls", 300, seed=2)),
}

# 4. One pool of 3/4 of the pages the three need apart (pages shared within a model too),
#    retrained at a fine-tuning learning rate (1e-4; the default 1e-3 is NWV's, for models
#    trained beside the pool). The retraining is a tutorial's minute: expect outputs off by
#    tens of percent. Compact released models have few pages to spare; what full-length
#    retraining and smaller pools give is `benchmarks.pretrained`'s table (docs/results.md),
#    and `wv.explore_pool_sizes` / `wvirt pack --explore` finds the smallest pool that keeps
#    the error you set.
apart = wv.PagePlan.lossless(tasks).n_pool_pages
config = wv.PackConfig(
    pool_pages=int(0.75 * apart),
    share_within_task=True,
    optimize=wv.OptimizeConfig(rounds=1, iterations=50, batch_size=50, lr=1e-4, eval_every=10),
)
result = wv.pack(tasks, data, config)
report = result.report
print(f"{report['bytes_separate']} B apart -> {report['bytes_packed']} B packed")
for name, row in report["tasks"].items():
    print(f"{name}: {row['metric']} on held-out crops {row['packed']:.4g}")
    for metric, values in row["extra_metrics"].items():
        print(f"  {metric}: {values['packed']:.4g}")
assert report["ratio_bytes"] >= 1.3
wv.save_wvpack(f"{out_dir}/pretrained.wvpack", result.plan, tasks, report)

# 5. The compiled pack answers as the packed weights do: every output of every model, after
#    a switch, against the torch twin with the weights the plan gives it.
runtime = MultitaskRuntime(result.plan, wv.build(wv.lower(tasks, result.plan)))
for task in tasks:
    x = data[task.name].train[:1]
    twin = TorchTwin(task)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in result.plan.read(task.name).items()})
    with torch.no_grad():
        expected = twin(torch.from_numpy(x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = runtime.run(task.name, x)
    err = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    print(f"{task.name}: compiled vs packed weights in torch {err:.1e}")
    assert err <= 1e-4
