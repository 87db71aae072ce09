"""Per-request overhead: `MultitaskRuntime.run` (numpy in, numpy out) against a direct call of
the task's VM function on tensors made beforehand, interleaved in one process (batch 1, llvm,
materialize mode, each task's own weights). The difference is what the runtime adds per request:
input checks and copies, the lock, counters, outputs to numpy."""

from __future__ import annotations

import time

import numpy as np

from benchmarks._common import run


def measure(quick: bool) -> dict:
    import tvm
    from tvm_weightvirt.runtime import MultitaskRuntime

    import tvm_weightvirt as wv
    from tvm_weightvirt.abi import task_function
    from tvm_weightvirt.apps import suite

    tasks = suite.load_suite(suite.FIVE_TASKS)
    graphs = [t.task for t in tasks]
    plan = wv.PagePlan.lossless(graphs)
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    calls = 300 if quick else 3000
    numbers: dict = {"calls": calls, "tasks": {}}
    for t in tasks:
        x = t.example_input().numpy()
        x_tensor = tvm.runtime.tensor(x)
        runtime.run(t.name, x)  # switched in: the task's (transformed) weights are ready
        # the same function on the same weights that `run` calls
        function, weights = runtime.vm[task_function(t.name)], runtime._arguments
        times = {"run": [], "vm_call": []}
        for _ in range(calls):
            start = time.perf_counter()
            runtime.run(t.name, x)
            times["run"].append(time.perf_counter() - start)
            start = time.perf_counter()
            function(x_tensor, *weights)
            times["vm_call"].append(time.perf_counter() - start)
        run_us, vm_us = (1e6 * float(np.median(times[k])) for k in ("run", "vm_call"))
        numbers["tasks"][t.name] = {
            "run_us": run_us,
            "vm_call_us": vm_us,
            "overhead_us": run_us - vm_us,
        }
    return numbers


def format_table(numbers: dict) -> str:
    lines = [f"{'task':14s} {'run':>9s} {'vm call':>9s} {'overhead':>9s}  (medians, us)"]
    for name, t in numbers["tasks"].items():
        lines.append(
            f"{name:14s} {t['run_us']:9.1f} {t['vm_call_us']:9.1f} {t['overhead_us']:9.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, format_table)
