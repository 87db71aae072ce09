"""Tutorial 6: switch tasks on a Cortex-M without moving a weight byte.

Run: python tutorials/06_zero_copy_on_a_cortex_m.py [OUT_DIR]

A materialized build gathers the task's pages into a RAM weight buffer at every switch. A
zero-copy build has no weight buffer: each kernel reads its weights from the pages in place,
through the task's page table, so a switch only picks the task. It needs a page-aligned plan
(every weight starts on a page): `wvirt pack ... --page-aligned`, then
`wvirt build PACK --target cortex-m4 --zero-copy flash -o DIR`. Step 4 does the same with
SmartDeal pages, which are decoded per call instead of read in place. Runs on QEMU when the Arm
toolchain is installed (`make arm-toolchain`), else with the host's gcc (no instruction counts).
"""

import sys
import tempfile

import numpy as np
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.smartdeal import encode_pages
from tvm_weightvirt.apps import examples
from tvm_weightvirt.targets import mcu

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()

# 1. Two tasks (a small torch CNN and MLP) on one page-aligned plan: pages of 128 weights,
#    each weight starting on a page, so kernels shared by tasks find a weight at a page start.
cnn, cnn_x = examples.torch_model("cnn2d", seed=1)
mlp, mlp_x = examples.torch_model("mlp", seed=2)
tasks = [
    wv.Task.from_torch(cnn, (cnn_x,), name="cnn"),
    wv.Task.from_torch(mlp, (mlp_x,), name="mlp"),
]
inputs = {"cnn": cnn_x.numpy(), "mlp": mlp_x.numpy()}
plan = wv.PagePlan.lossless(tasks, page_size=128, page_aligned=True)
print(plan.summary())

# 2. A C project of a plan, run over a switch sequence and compared with the llvm build of
#    the same plan (its reference outputs).
sequence = ["cnn", "mlp", "cnn", "mlp"]
on_qemu = not mcu.missing_tools()


def build_and_run(plan: wv.PagePlan, kind: str, options: dict) -> None:
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in sequence]
    folder = f"{out_dir}/{kind}"
    manifest = mcu.generate_project(tasks, plan, folder, target="cortex-m4", **options)
    ram = manifest["data_bytes"]["ram"]
    print(f"{kind}: RAM data {sum(ram.values())} B {ram}")
    mcu.write_requests(folder, [(name, [inputs[name]]) for name in sequence])
    run = mcu.run_project(folder, host=not on_qemu, timeout=120)
    err = max(float(np.abs(o[0] - r).max()) for o, r in zip(run.outputs, reference))
    print(f"  max |C - llvm| over {sequence}: {err:.2g}")
    assert err <= 1e-5
    if on_qemu:  # instructions per switch and per inference (QEMU -icount, 40 per tick)
        print(f"  switch instructions: {run.switch_instructions}")
        print(f"  inference instructions: {run.run_instructions}")


# 3. Three C projects: materialized, zero-copy with the pages in RAM, zero-copy with the pages
#    read in place from flash (RAM then holds activations and a small scratch only).
build_and_run(plan, "materialized", {})
build_and_run(plan, "zero_copy_ram", {"zero_copy": True, "pool_in": "ram"})
build_and_run(plan, "zero_copy_flash", {"zero_copy": True, "pool_in": "flash"})

# 4. SmartDeal pages (power-of-two codes x a 3x3 basis per page, `wvirt pack --smartdeal`)
#    cannot be read in place: zero-copy decodes each weight, whole pages, into the scratch
#    before every call that reads it. No weight buffer, no codes in RAM, a switch that picks
#    the task; every inference pays the decode a materialized switch pays once.
aligned = wv.PagePlan.lossless(tasks, page_size=96, page_aligned=True)  # rows of 3 codes
coded = wv.PagePlan.from_coded(96, encode_pages(aligned.pool), aligned.tasks)
build_and_run(coded, "coded_materialized", {})
build_and_run(coded, "coded_zero_copy_flash", {"zero_copy": True, "pool_in": "flash"})
if not on_qemu:
    print("(host gcc: no instruction counts; install the Arm toolchain for QEMU)")
