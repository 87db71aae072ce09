"""Per request: the C++ runtime (libwvirt_runtime, through examples/cpp's `wv_serve`) against the
Python runtime (`MultitaskRuntime.run`), on the suite's tasks (lossless plan, llvm, materialize
mode, batch 1). Per task, a stream of its own requests (no switch); then all tasks round robin
(`switching`: a switch before every request). A request is timed from its switch (if any) to
its outputs in the caller's memory: medians over `repeat` rounds, each system in three fresh
processes and the median of their medians taken (where a process's buffers land moves its
kernels' time by up to a third on this machine). The outputs of both are compared bit for
bit."""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks._common import run

PROCESSES = 3


def python_process(library_dir: str, pack: str, requests: list, repeat: int) -> tuple:
    """In a fresh process: the Python runtime on the built library, `requests` served `repeat`
    times; the median request seconds and the first round's outputs."""
    from tvm_weightvirt.runtime import MultitaskRuntime

    import tvm_weightvirt as wv

    plan = wv.load_wvpack(pack, graphs=False).plan
    runtime = MultitaskRuntime(plan, wv.Library.load(library_dir), level2=pack)
    seconds, first = [], None
    for _ in range(repeat):
        outputs = []
        for task, x in requests:
            start = time.perf_counter()
            outputs.append([np.array(y) for y in runtime.run(task, *x)])
            seconds.append(time.perf_counter() - start)
        first = first or outputs
    return float(np.median(seconds)), first, runtime.resident_bytes


def measure(quick: bool) -> dict:
    from tvm_weightvirt.runtime import cpp_app

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
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    repeat = 50 if quick else 200
    streams = {t.name: [(t.name, [inputs[t.name]])] * 10 for t in tasks}
    streams["switching"] = [(t.name, [inputs[t.name]]) for _ in range(4) for t in tasks]
    numbers: dict = {"repeat": repeat, "per_request_us": {}, "speedup": {}, "outputs_equal": True}
    spawn = multiprocessing.get_context("spawn")
    for label, requests in streams.items():
        python_medians, cpp_medians = [], []
        for p in range(PROCESSES):
            with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
                median, expected, python_bytes = fresh.submit(
                    python_process, library_dir, pack, requests, repeat
                ).result()
            python_medians.append(1e6 * median)
            got, report = cpp_app.serve(
                wv_serve, library_dir, pack, requests, f"{work}/{label}{p}", repeat
            )
            cpp_medians.append(report.median_request_us)
            numbers["outputs_equal"] &= all(
                all(np.array_equal(y, e) for y, e in zip(ys, es)) for ys, es in zip(got, expected)
            )
        python_us, cpp_us = float(np.median(python_medians)), float(np.median(cpp_medians))
        numbers["per_request_us"][label] = {"python": python_us, "cpp": cpp_us}
        numbers["speedup"][label] = python_us / cpp_us
    per_task = [numbers["speedup"][t.name] for t in tasks]
    numbers["speedup_geomean_tasks"] = float(np.exp(np.mean(np.log(per_task))))
    numbers["resident_bytes"] = {"python": python_bytes, "cpp": report.resident_bytes}
    return numbers


def format_table(numbers: dict) -> str:
    lines = [f"{'stream':14s} {'python us':>10s} {'C++ us':>8s} {'speedup':>8s}"]
    for label, t in numbers["per_request_us"].items():
        lines.append(
            f"{label:14s} {t['python']:10.1f} {t['cpp']:8.1f} {numbers['speedup'][label]:7.2f}x"
        )
    lines.append(f"geomean over tasks: {numbers['speedup_geomean_tasks']:.2f}x")
    lines.append(f"outputs bit-identical: {numbers['outputs_equal']}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, format_table)
