"""Tutorial 2: pack your own models with your own data into one pool of shared pages.

Run: python tutorials/02_pack_your_models.py [OUT_DIR]

Three trained models none of which is in the suite: two ONNX classifiers (one with labelled
data, one with unlabelled samples only) and a torch regression model saved by
`torch.export.save`. Packing computes each task's Fisher, matches pages across tasks into a
pool smaller than the three models, and retrains the pool jointly on each task's data. Then
the plan is built with TVM, run with in-memory task switches and inspected. The same pack from
the command line: `wvirt pack OUT_DIR/suite.toml -o suite.wvpack`.
"""

import os
import sys
import tempfile

import numpy as np
import torch
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.report import format_report
from tvm_weightvirt.apps import examples
from tvm_weightvirt.apps.figures import plot_pack
from tvm_weightvirt.frontend.twin import TorchTwin

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()

# 1. Your files: models and .npz data (keys x_train, y_train, x_val, y_val, x_test, y_test;
#    labels and the val/test splits are optional). `gestures.npz` holds x_train only.
files = examples.write_user_models(out_dir)
for name, paths in files.items():
    print(f"{name}: {os.path.basename(paths['model'])}, {sorted(np.load(paths['data']).files)}")

# 2. Tasks (the graph and its weights) and their data. Objectives: classification where there
#    are labels, distill where there are none (the original model's outputs are the targets),
#    regression when you say so.
tasks = [
    wv.Task.from_onnx(files["sensors"]["model"], name="sensors"),
    wv.Task.from_onnx(files["gestures"]["model"], name="gestures"),
    wv.Task.from_pt2(files["friedman"]["model"], name="friedman"),
]
data = {
    "sensors": wv.TaskData.from_npz(files["sensors"]["data"]),
    "gestures": wv.TaskData.from_npz(files["gestures"]["data"]),
    "friedman": wv.TaskData.from_npz(files["friedman"]["data"], objective="regression"),
}

# 3. Pack: 163 pages of weights into a pool of 130 (Fisher -> matching -> joint retraining).
config = wv.PackConfig(pool_pages=130, optimize=wv.OptimizeConfig(rounds=4, iterations=300))
result = wv.pack(tasks, data, config)
print(format_report(result.report))
print("gestures' splits:", result.report["tasks"]["gestures"]["data"]["notes"])
path = os.path.join(out_dir, "packed.wvpack")
wv.save_wvpack(path, result.plan, tasks, report=result.report)

# 4. Build once, switch between tasks in memory; each output equals the model read from the
#    packed pages (its torch twin with the plan's weights).
pack = wv.load_wvpack(path)
runtime = MultitaskRuntime(pack.plan, wv.build(wv.lower(pack.tasks, pack.plan)), level2=path)
for task in pack.tasks + pack.tasks[::-1]:
    x = np.load(files[task.name]["data"])["x_train"][:1].astype(np.float32)
    weights = {k: torch.from_numpy(v) for k, v in pack.plan.read(task.name).items()}
    with torch.no_grad():
        expected = torch.func.functional_call(TorchTwin(task), weights, (torch.from_numpy(x),))
    out = runtime.run(task.name, x)[0]
    print(
        f"{task.name}: output {out.ravel().round(3)}, max |compiled - twin| = {np.abs(out - expected.numpy()).max():.1e}"
    )
    assert np.allclose(out, expected.numpy(), atol=1e-5, rtol=1e-5)
print(f"{runtime.counters.switches} switches, {runtime.counters.bytes_gathered} B gathered")

# 5. Inspect: bytes per task (separate vs shared vs exclusive) and pages shared between tasks.
plot_pack(pack.plan, pack.report, os.path.join(out_dir, "report.png"))
print(f"wrote {path} and {os.path.join(out_dir, 'report.png')}")
