"""Per request: the C++ runtime (libwvirt_runtime, through examples/cpp's `wv_serve`) against the
Python runtime (`MultitaskRuntime.run`), on the suite's tasks (lossless plan, llvm, materialize
mode, batch 1). Two request streams, each served the same way by both: `same_task` (each task's
requests back to back, no switch) and `switching` (round robin: a switch before every request).
A request is timed from its switch (if any) to its outputs in the caller's memory; medians over
`repeat` rounds of the stream. The outputs of both are compared bit for bit."""

from __future__ import annotations

import tempfile
import time

import numpy as np

from benchmarks._common import run


def measure(quick: bool) -> dict:
    from tvm_weightvirt.runtime import MultitaskRuntime, cpp_app

    import tvm_weightvirt as wv
    from tvm_weightvirt.apps import suite

    tasks = suite.load_suite(suite.FIVE_TASKS if quick else suite.TEN_TASKS)
    graphs = [t.task for t in tasks]
    plan = wv.PagePlan.lossless(graphs)
    library = wv.build(wv.lower(graphs, plan))
    work = tempfile.mkdtemp(prefix="wvirt-cpp-bench-")
    pack, library_dir = f"{work}/suite.wvpack", f"{work}/build"
    wv.save_wvpack(pack, plan, graphs)
    library.export(library_dir)
    wv_serve = cpp_app.build_wv_serve()
    python = MultitaskRuntime(plan, library, level2=pack)
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    per_task = 4
    streams = {
        "same_task": [(t.name, [inputs[t.name]]) for t in tasks for _ in range(per_task)],
        "switching": [(t.name, [inputs[t.name]]) for _ in range(per_task) for t in tasks],
    }
    repeat = 50 if quick else 300
    numbers: dict = {"tasks": [t.name for t in tasks], "repeat": repeat, "per_request_us": {}}
    numbers["speedup"], numbers["outputs_equal"] = {}, True
    for label, requests in streams.items():
        seconds, expected = [], None
        for _ in range(repeat):
            outputs = []
            for task, x in requests:
                start = time.perf_counter()
                outputs.append(python.run(task, *x))
                seconds.append(time.perf_counter() - start)
            expected = expected or outputs
        python_us = 1e6 * float(np.median(seconds))
        got, report = cpp_app.serve(
            wv_serve, library_dir, pack, requests, f"{work}/{label}", repeat
        )
        numbers["outputs_equal"] &= all(
            all(np.array_equal(y, e) for y, e in zip(ys, es)) for ys, es in zip(got, expected)
        )
        numbers["per_request_us"][label] = {"python": python_us, "cpp": report.median_request_us}
        numbers["speedup"][label] = python_us / report.median_request_us
    numbers["resident_bytes"] = {"python": python.resident_bytes, "cpp": report.resident_bytes}
    return numbers


def format_table(numbers: dict) -> str:
    lines = [f"{'stream':10s} {'python us':>10s} {'C++ us':>8s} {'speedup':>8s}"]
    for label, t in numbers["per_request_us"].items():
        lines.append(
            f"{label:10s} {t['python']:10.1f} {t['cpp']:8.1f} {numbers['speedup'][label]:7.2f}x"
        )
    lines.append(f"outputs bit-identical: {numbers['outputs_equal']}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, format_table)
