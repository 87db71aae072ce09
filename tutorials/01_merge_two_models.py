"""Tutorial 1: merge an ONNX model and a torch model into one TVM program over weight pages.

Run: python tutorials/01_merge_two_models.py [OUT_DIR]

Both models keep their own pages here (a lossless plan): the merged program reproduces each
model exactly. Later tutorials share pages between tasks.
"""

import os
import sys
import tempfile

import numpy as np
import onnx
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()

# 1. Two tasks: a ResNet-style ONNX file and a small torch CNN (torch.export underneath).
resnet, resnet_x = examples.onnx_resnet_block(seed=0)
onnx.save(resnet, os.path.join(out_dir, "resnet.onnx"))
a = wv.Task.from_onnx(os.path.join(out_dir, "resnet.onnx"), name="resnet")
cnn, cnn_x = examples.torch_model("cnn2d", seed=1)
b = wv.Task.from_torch(cnn, (cnn_x,), name="digits")
print(f"resnet: {a.n_weights} weights in {len(a.weights)} tensors: {list(a.weights)[:4]} ...")
print(f"digits: {b.n_weights} weights in {len(b.weights)} tensors: {list(b.weights)[:4]} ...")

# 2. A page plan: pages of 100 weights, every task on pages of its own (identity tables).
plan = wv.PagePlan.lossless([a, b], page_size=100)
print(plan.summary())

# 3. Lower (MergeTasks -> AddPageGather: one gather kernel per switch) and build for the CPU.
mod = wv.lower([a, b], plan, mode="materialize")
print("functions:", sorted(gv.name_hint for gv in mod.get_global_vars()))
library = wv.build(mod, target="llvm")

# 4. Run both tasks, switching in memory, and compare with each model compiled alone.
runtime = MultitaskRuntime(plan, library)
for task, x in [(a, resnet_x), (b, cnn_x.numpy()), (a, resnet_x)]:
    out = runtime.run(task.name, x)[0]
    alone = StandaloneModel(task).run(x)[0]
    print(f"{task.name}: output {out.shape}, max |merged - alone| = {np.abs(out - alone).max()}")
    assert np.array_equal(out, alone)

# 5. The artifact: safetensors tensors + a JSON manifest, checked on load.
path = os.path.join(out_dir, "suite.wvpack")
size = wv.save_wvpack(path, plan, [a, b])
loaded = wv.load_wvpack(path)
assert loaded.plan.pool.tobytes() == plan.pool.tobytes()
print(f"saved and reloaded {path} ({size} B); tasks {[t.name for t in loaded.tasks]}")
