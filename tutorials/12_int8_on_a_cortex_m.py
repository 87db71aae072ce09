"""Tutorial 12: int8 tasks on a Cortex-M, calibrated on your data.

Run: python tutorials/12_int8_on_a_cortex_m.py [OUT_DIR]

`wv.quantize_int8(task, samples)` turns a float32 task into int8 kernels: conv and dense weights
int8 per output channel, activations int8 per tensor with the scale and zero point of the range
they take on `samples` (post-training calibration: give it training data, not the test split),
sums in int32, bias and (Leaky)ReLU folded into an integer requantization. Inputs and outputs
stay float32. Integer arithmetic is exact, so the C kernels on the Cortex-M compute the host's
int8 outputs bit for bit. Not yet: int8 *pages* (the int8 weights are constants of each task's
graph, in flash, not shared between tasks) and `wvirt pack --int8`. Runs on QEMU when the Arm
toolchain is installed (`make arm-toolchain`), else with the host's gcc (no instruction counts).
"""

import sys
import tempfile

import numpy as np
from tvm_weightvirt.runtime.standalone import StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import suite
from tvm_weightvirt.targets import mcu

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
on_qemu = not mcu.missing_tools()

# 1. Two trained float32 tasks of the suite (8x8 digits, MNIST), each quantized with its own
#    training split as calibration data.
tasks = suite.load_suite(["digits", "mnist"])
int8_tasks = [wv.quantize_int8(t.task, t.splits["train"].x) for t in tasks]


def test_accuracy(model: StandaloneModel, task: suite.SuiteTask) -> float:
    x, y = task.splits["test"].x, task.splits["test"].y
    predicted = np.array([model.run(x[i : i + 1])[0].argmax() for i in range(len(x))])
    return 100.0 * float(np.mean(predicted == y))


# 2. Accuracy on the test split, float32 vs int8, both compiled for this machine.
for task, q in zip(tasks, int8_tasks):
    f32, i8 = (
        test_accuracy(StandaloneModel(task.task), task),
        test_accuracy(StandaloneModel(q), task),
    )
    print(f"{task.name}: test accuracy float32 {f32:.2f} %, int8 {i8:.2f} % ({i8 - f32:+.2f} pp)")

# 3. Both int8 tasks in one Cortex-M project (weights in flash, activations in one RAM arena),
#    run over a few test samples; the host's int8 build gives the same bits.
plan = wv.PagePlan.lossless(int8_tasks, page_size=1024)  # no weight parameters: no pages
manifest = mcu.generate_project(int8_tasks, plan, f"{out_dir}/int8", target="cortex-m4")
requests = [(t.name, [t.splits["test"].x[i : i + 1]]) for i in range(2) for t in tasks]
mcu.write_requests(f"{out_dir}/int8", requests)
run = mcu.run_project(f"{out_dir}/int8", host=not on_qemu, timeout=300)
hosts = {q.name: StandaloneModel(q) for q in int8_tasks}
for (name, inputs), outputs in zip(requests, run.outputs):
    assert np.array_equal(outputs[0], hosts[name].run(*inputs)[0]), name
print(f"C == host bit for bit over {[name for name, _ in requests]}")
for task in tasks:
    print(f"{task.name}: weights {4 * task.task.n_weights} B as float32", end=", ")
print(f"int8 project constants {manifest['data_bytes']['flash']['constants']} B")
if on_qemu:
    print(f"RAM {mcu.memory_report(f'{out_dir}/int8')['ram_bytes']} B (arena, stack, runtime)")
    print(f"int8 inference instructions: {run.run_instructions}")

# 4. The same tasks as float32 for comparison (QEMU only: instruction counts), their weights
#    read in place from flash too (zero-copy, tutorial 6), so that RAM holds activations only.
if on_qemu:
    float_tasks = [t.task for t in tasks]
    float_plan = wv.PagePlan.lossless(float_tasks, page_size=128, page_aligned=True)
    mcu.generate_project(
        float_tasks, float_plan, f"{out_dir}/float32", zero_copy=True, pool_in="flash"
    )
    mcu.write_requests(f"{out_dir}/float32", requests)
    float_run = mcu.run_project(f"{out_dir}/float32", timeout=300)
    print(f"RAM {mcu.memory_report(f'{out_dir}/float32')['ram_bytes']} B as float32")
    print(f"float32 inference instructions: {float_run.run_instructions}")
