"""Tutorial 3: build two models for a Jetson Orin (and a Hopper GPU) on a machine without a
GPU, and run the folder on the device with TVM's runtime alone.

Run: python tutorials/03_deploy_to_a_gpu.py [OUT_DIR]     (needs nvcc, the CUDA toolkit)

The exported library carries nvcc's machine code for each arch, so the device needs the CUDA
driver and TVM's runtime, no compiler.
"""

import os
import sys
import tempfile

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.compile.cuda import fatbin_entries, library_cuda_binaries

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
os.makedirs(out_dir, exist_ok=True)

# 1. Two small torch models as tasks, on a lossless page plan, saved as a .wvpack.
models = {kind: examples.torch_model(kind, seed) for seed, kind in enumerate(["cnn2d", "mlp"])}
tasks = [wv.Task.from_torch(m, (x,), name=kind) for kind, (m, x) in models.items()]
plan = wv.PagePlan.lossless(tasks)
pack = os.path.join(out_dir, "two.wvpack")
wv.save_wvpack(pack, plan, tasks)

# 2. Build for cuda: kernels generated for the lowest arch, machine code for each arch.
library = wv.build(
    wv.lower(tasks, plan), target={"kind": "cuda", "arch": "sm_87"}, archs=["sm_87", "sm_90"]
)
build = os.path.join(out_dir, "build-gpu")
library.export(build)  # nvcc runs here, at export

# 3. What the device will load: one fatbin, an ELF per arch, no CUDA source.
[(fmt, code)] = library_cuda_binaries(os.path.join(build, "library.so"))
print(f"library.so: a {fmt} of {len(code)} B with {fatbin_entries(code)}")
assert fmt == "fatbin" and [arch for _, arch in fatbin_entries(code)] == ["sm_87", "sm_90"]

# 4. On the device (copy the folder and the .wvpack there): TVM's runtime alone. The GPU check
# (benchmarks/gpu_check.sh) ran this command's path on an H200; see docs/gpu.md.
print("on the device run:")
print(f"  TVM_USE_RUNTIME_LIB=1 wvirt run {pack} --library {build} --device cuda --tasks cnn2d,mlp")
