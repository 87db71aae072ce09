"""Tutorial 9: your own architectures, through torch and ONNX, shared and on a Cortex-M.

Run: python tutorials/09_your_architecture.py [OUT_DIR]

Two models a user might write: a keyword-spotting LSTM (exported to ONNX: TVM has no LSTM
converter, the project unrolls it) and a small MobileNetV3-style CNN with batch norms, hardswish
and squeeze-excite (the torch path: its batch norms fold into the convolutions at intake, so no
running statistic is paged or shared). Each is checked lossless against torch, then both are
packed onto one pool smaller than the two together, retrained toward their own outputs, and run
from one C project on QEMU (the host's gcc without the Arm toolchain). What `wvirt pack` /
`wvirt build --target cortex-m4` / `wvirt run --qemu` do, in Python. The coverage matrix of 13
architectures: docs/architectures.md.
"""

import io
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
from torch import nn
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.targets import mcu

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(0)


class KeywordLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(10, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):  # [batch, 20 frames, 10 features]
        y, _ = self.rnn(x)
        return self.head(y[:, -1])  # the last step: a -1 index, normalised at intake


class TinyMobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8))
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8))
        self.squeeze, self.excite = nn.Linear(8, 4), nn.Linear(4, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):  # [batch, 1, 16, 16]
        x = nn.functional.hardswish(self.stem(x))
        x = nn.functional.hardswish(self.depthwise(x))
        scale = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3))))))
        return self.head((x * scale[:, :, None, None]).mean((2, 3)))


models = {"kws": KeywordLSTM().eval(), "vision": TinyMobileNet().eval()}
for model in models.values():  # non-trivial batch-norm statistics, as a trained model has
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
shapes = {"kws": (1, 20, 10), "vision": (1, 1, 16, 16)}
rng = np.random.default_rng(0)
examples = {n: torch.from_numpy(rng.normal(size=s).astype(np.float32)) for n, s in shapes.items()}

# 1. Intake: the LSTM through an ONNX export, the CNN through torch.export.
buffer = io.BytesIO()
torch.onnx.export(models["kws"], (examples["kws"],), buffer, opset_version=17, dynamo=False)
tasks = [
    wv.Task.from_onnx(onnx.load_from_string(buffer.getvalue()), name="kws"),
    wv.Task.from_torch(models["vision"], (examples["vision"],), name="vision"),
]
for task in tasks:
    with torch.no_grad():
        expected = models[task.name](examples[task.name]).numpy()
    built = StandaloneModel(task).run(examples[task.name].numpy())[0]
    err = float(np.abs(built - expected).max())
    print(f"{task.name}: {task.n_weights} weights, compiled vs torch {err:.1e}")
    assert err <= 1e-5

# 2. Sharing: both on a pool of half the pages they need apart, each retrained to reproduce its
#    own model's outputs on (here random) inputs; with labelled data, give (x, y) instead.
data = {}
for name, model in models.items():
    splits = []
    for n in (96, 32, 32):  # train, val (checkpoint selection), test
        x = rng.normal(size=(n, *shapes[name][1:])).astype(np.float32)
        with torch.no_grad():
            splits.append((x, model(torch.from_numpy(x)).numpy()))
    data[name] = wv.TaskData(*splits, objective="regression")
apart = wv.PagePlan.lossless(tasks, page_size=64).n_pool_pages
config = wv.PackConfig(
    page_size=64,
    pool_pages=apart // 2,
    share_within_task=True,
    optimize=OptimizeConfig(rounds=2, iterations=60, batch_size=32, eval_every=10),
)
result = wv.pack(tasks, data, config)
plan = result.plan
print(plan.summary())
for name, row in result.report["tasks"].items():
    print(f"{name}: test RMSE to its own model {row['packed']:.4f} (matched {row['matched']:.4f})")
wv.save_wvpack(f"{out_dir}/mine.wvpack", plan, tasks, result.report)

# 3. One Cortex-M project for both, run A -> B -> A, equal to the llvm build of the same plan.
runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)))
sequence = ["kws", "vision", "kws"]
inputs = {n: examples[n].numpy() for n in shapes}
manifest = mcu.generate_project(tasks, plan, f"{out_dir}/m4")
mcu.write_requests(f"{out_dir}/m4", [(n, [inputs[n]]) for n in sequence])
on_qemu = not mcu.missing_tools()
run = mcu.run_project(f"{out_dir}/m4", host=not on_qemu, timeout=120)
err = max(
    float(np.abs(out[0] - runtime.run(n, inputs[n])[0]).max())
    for n, out in zip(sequence, run.outputs)
)
print(f"Cortex-M ({'QEMU' if on_qemu else 'host gcc'}) vs llvm over {sequence}: {err:.1e}")
assert err <= 1e-5
if on_qemu:
    print(f"  inference instructions: {run.run_instructions}")
