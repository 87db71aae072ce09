"""Tutorial 8: switch tasks on a host without moving a weight byte: pages mapped, not copied.

Run: python tutorials/08_switch_without_copying.py [OUT_DIR]

A materialize-mode switch gathers the task's pages into a weight buffer and then runs its
weight-only ops (the transposes of dense weights, conv weights to output channels last). On a
host with an MMU neither is needed:
- `Task.in_kernel_layout()` stores each weight as the CPU kernels read it, so a plan packed
  from it leaves no weight-only op for a switch (same function: the same outputs, and to
  Fisher and retraining the same gradients, permuted alike);
- with pages of one OS page (1024 float32 weights = 4 KiB), `MultitaskRuntime(...,
  mapped=True)` maps each task's pages, once, into a virtual range of its own whose views are
  its weights: the OS page table is the task's page table. A switch picks the range; the
  kernels are materialize mode's, reading plain dense weights.
The same from the command line: `wvirt pack OUT_DIR/suite.toml --kernel-layout --page-size
1024 -o mapped.wvpack`, then `wvirt run mapped.wvpack --mapped --tasks sensors,friedman,...`.
Linux only (memfd + mmap); float32 pages (SmartDeal-coded pages are decoded at a switch).
"""

import os
import sys
import tempfile
import time

import numpy as np
from tvm_weightvirt.runtime import MultitaskRuntime
from tvm_weightvirt.runtime.page_mapping import OS_PAGE_BYTES

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.report import format_report
from tvm_weightvirt.apps import examples

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()

# 1. Your models (tutorial 2's three, none of them in the suite), in kernel layout.
files = examples.write_user_models(out_dir)
imported, data = examples.load_user_models(files)
tasks = [t.in_kernel_layout() for t in imported]
for before, after in zip(imported, tasks):
    name, weight = next(iter(before.weights.items()))
    print(f"{before.name}: '{name}' {weight.shape} -> {after.weights[name].shape}")

# 2. Pack on pages of one OS page (sharing pages across tasks, as NWV does), and save. Pages
#    of 4 KiB are coarse for models of a few thousand weights (17 pages here, a pool of 13);
#    for models of millions of weights they are as fine-grained as NWV's.
page_size = OS_PAGE_BYTES // 4
config = wv.PackConfig(
    page_size=page_size, pool_pages=13, optimize=wv.OptimizeConfig(rounds=2, iterations=300)
)
result = wv.pack(tasks, data, config)
path = os.path.join(out_dir, "mapped.wvpack")
wv.save_wvpack(path, result.plan, tasks, report=result.report)
plan = result.plan
print(plan.summary())
print(format_report(result.report))  # what sharing 4 KiB pages cost each task

# 3. One library, two runtimes: gathering switches and mapped ones.
library = wv.build(wv.lower(tasks, plan))
gathering = MultitaskRuntime(plan, library)
mapped = MultitaskRuntime(plan, library, mapped=True)
inputs = {n: np.load(files[n]["data"])["x_train"][:1].astype(np.float32) for n in plan.tasks}
order = ["sensors", "friedman", "gestures", "sensors", "gestures", "friedman"]
for name in order:  # the same kernels on the same weights: the same bits
    np.testing.assert_array_equal(
        mapped.run(name, inputs[name])[0], gathering.run(name, inputs[name])[0]
    )


def median_switch_us(runtime: MultitaskRuntime, n: int = 200) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        runtime.switch(order[i % len(order)])
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


for label, runtime in [("gathering", gathering), ("mapped", mapped)]:
    c = runtime.counters  # of the runs above
    moved = f"{c.switches} switches moved {c.bytes_gathered} B gathered + {c.bytes_transformed}"
    print(f"{label:9s}: {moved} B transformed; {runtime.resident_bytes:,} B resident")
assert mapped.counters.bytes_gathered == mapped.counters.bytes_transformed == 0
for label, runtime in [("gathering", gathering), ("mapped", mapped)]:
    print(f"{label:9s}: a switch takes {median_switch_us(runtime):.1f} us (median of 200)")
