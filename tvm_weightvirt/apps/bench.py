"""The switch benchmark: packed (materialize, fused) vs. reload-from-storage vs. all-resident,
on the suite, over one seeded random request sequence, all in one process."""

from __future__ import annotations

import tempfile
import time

import numpy as np

from ..algorithms.optimize import OptimizeConfig
from ..algorithms.pipeline import PackConfig
from ..compile.compiler import build, lower
from ..frontend.packing import pack
from ..progress import log, steps
from . import suite


def _median_p99(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "p99": float(np.percentile(values, 99))}


class _Memcpy:
    """Copies a task's page bytes once between two 64-byte aligned buffers: the physical
    limit of a materialize switch, timed in the same loop as the systems."""

    def __init__(self, max_bytes: int) -> None:
        from tvm_weightvirt.runtime.io import aligned_zeros

        self.src, self.dst = aligned_zeros((max_bytes // 4,)), aligned_zeros((max_bytes // 4,))

    def __call__(self, n_bytes: int) -> float:
        a, b = self.src[: n_bytes // 4], self.dst[: n_bytes // 4]
        start = time.perf_counter()
        np.copyto(b, a)
        return time.perf_counter() - start


def switch_benchmark(quick: bool = False, seed: int = 0) -> dict:
    from tvm_weightvirt.runtime import MultitaskRuntime, ReloadModels, ResidentModels

    n_requests = 100 if quick else 400
    tasks = suite.load_suite(suite.FIVE_TASKS)
    # The packed plan: NWV's pool size, matched pages (retraining does not change switch cost).
    plan = pack(*suite.packable(tasks), PackConfig(optimize=OptimizeConfig(rounds=0))).plan
    graphs = [t.task for t in tasks]
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    storage = tempfile.mkdtemp(prefix="wvirt-reload-")
    log.info("switch benchmark: building the packed (2 modes) and separate systems")
    systems = {
        "materialize": MultitaskRuntime(plan, build(lower(graphs, plan, "materialize"))),
        "fused": MultitaskRuntime(plan, build(lower(graphs, plan, "fused"))),
        "reload": ReloadModels(graphs, storage, cold=True),
        "reload_warm": ReloadModels(graphs, storage, cold=False),
        "resident": ResidentModels(graphs),
    }
    rng = np.random.default_rng(seed)
    sequence = rng.choice([t.name for t in tasks], n_requests).tolist()
    task_bytes = {n: t.layout.n_pages * plan.page_size * 4 for n, t in plan.tasks.items()}
    memcpy = _Memcpy(max(task_bytes.values()))
    for system in systems.values():  # warm-up: every task once
        for name in inputs:
            system.run(name, inputs[name])
    times = {label: {"switch": [], "infer": [], "e2e": [], "per_memcpy": []} for label in systems}
    memcpy_us = []
    # Request by request, every system in turn: machine noise hits all of them alike.
    for i, name in steps(list(enumerate(sequence)), "switch benchmark requests"):
        switching = i == 0 or sequence[i - 1] != name
        copy_seconds = memcpy(task_bytes[name])
        if switching:
            memcpy_us.append(1e6 * copy_seconds)
        for label, system in systems.items():
            start = time.perf_counter()
            if switching:
                system.switch(name)
            switched = time.perf_counter()
            system.run(name, inputs[name])
            done = time.perf_counter()
            t = times[label]
            if switching:
                t["switch"].append(1e6 * (switched - start))
                t["per_memcpy"].append((switched - start) / copy_seconds)
            t["infer"].append(1e6 * (done - switched))
            t["e2e"].append(1e6 * (done - start))
    results = {
        label: {
            "switch_us": _median_p99(t["switch"]),
            "infer_us": _median_p99(t["infer"]),
            "e2e_us": _median_p99(t["e2e"]),
            "switches": len(t["switch"]),
            "switch_vs_memcpy": float(np.median(t["per_memcpy"])),
            "resident_bytes": int(systems[label].resident_bytes),
        }
        for label, t in times.items()
    }
    switch = {k: v["switch_us"]["median"] for k, v in results.items()}
    infer = {k: v["infer_us"]["median"] for k, v in results.items()}
    return {
        "requests": n_requests,
        "tasks": [t.name for t in tasks],
        "systems": results,
        "switch_us_materialize": switch["materialize"],
        "switch_us_fused": switch["fused"],
        "memcpy_us": float(np.median(memcpy_us)),
        "switch_vs_memcpy": results["materialize"]["switch_vs_memcpy"],
        "switch_ratio_reload": switch["reload"] / switch["materialize"],
        "switch_ratio_reload_warm": switch["reload_warm"] / switch["materialize"],
        "infer_ratio_materialize": infer["materialize"] / infer["resident"],
        "infer_ratio_fused": infer["fused"] / infer["resident"],
        "resident_bytes": {
            "packed": results["materialize"]["resident_bytes"],
            "packed_fused": results["fused"]["resident_bytes"],
            "reload": results["reload"]["resident_bytes"],
            "resident": results["resident"]["resident_bytes"],
        },
    }


def format_switch_table(numbers: dict) -> str:
    lines = [
        f"{numbers['requests']} requests over {', '.join(numbers['tasks'])} (batch 1, llvm)",
        f"{'system':12s} {'switch med':>11s} {'p99':>9s} {'infer med':>10s} {'p99':>9s} "
        f"{'e2e med':>9s} {'p99':>9s} {'weights B':>10s}",
    ]
    for label, r in numbers["systems"].items():
        lines.append(
            f"{label:12s} {r['switch_us']['median']:9.1f}us {r['switch_us']['p99']:7.1f}us "
            f"{r['infer_us']['median']:8.1f}us {r['infer_us']['p99']:7.1f}us "
            f"{r['e2e_us']['median']:7.1f}us {r['e2e_us']['p99']:7.1f}us {r['resident_bytes']:10d}"
        )
    lines.append(
        f"materialize switch / memcpy of the same bytes: {numbers['switch_vs_memcpy']:.2f} "
        f"(memcpy {numbers['memcpy_us']:.1f} us); reload / switch: cold "
        f"{numbers['switch_ratio_reload']:.0f}x, warm {numbers['switch_ratio_reload_warm']:.0f}x; "
        f"inference vs plain: materialize {numbers['infer_ratio_materialize']:.3f}x, "
        f"fused {numbers['infer_ratio_fused']:.3f}x"
    )
    return "\n".join(lines)
