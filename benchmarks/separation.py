"""Weight separation on the 10-task suite under one level-1 budget: NWV-style full sharing vs.
WS's shared + exclusive pages (accuracy deltas, bytes), and switch latency with exclusive pages
read from the level-2 file: cold, prefetched, vs. reloading the model."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from benchmarks._common import run
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.report import format_report
from tvm_weightvirt.algorithms.separation import SeparationConfig, parse_bytes
from tvm_weightvirt.apps import suite
from tvm_weightvirt.compile.compiler import build, lower
from tvm_weightvirt.frontend.artifact import load_wvpack, save_wvpack
from tvm_weightvirt.frontend.packing import pack

PAGE_SIZE = 512  # WS
L1_BUDGET = "256KiB"  # WS: 128 shared pages of 512 float32


def _drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def _switch_latency(tasks, plan, report, requests: int, seed: int = 0) -> dict:
    """Median switch time (µs) of the separated plan: exclusive pages read cold from the
    .wvpack file, or found prefetched; and the reload baseline's cold switch."""
    from tvm_weightvirt.runtime import MultitaskRuntime, ReloadModels

    folder = tempfile.mkdtemp(prefix="wvirt-sep-")
    path = os.path.join(folder, "suite.wvpack")
    graphs = [t.task for t in tasks]
    save_wvpack(path, plan, graphs, report)
    pack = load_wvpack(path)
    runtime = MultitaskRuntime(pack.plan, build(lower(pack.tasks, pack.plan)), level2=path)
    reload = ReloadModels.compile(pack.tasks, os.path.join(folder, "reload"), cold=True)
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    rng = np.random.default_rng(seed)
    names = [t.name for t in tasks]
    times = {"cold": [], "prefetched": [], "reload": []}
    previous = None
    for _ in range(requests):
        name = rng.choice([n for n in names if n != previous])
        _drop_cache(path)
        start = time.perf_counter()
        runtime.switch(name)  # exclusive pages read now, from a cold file
        times["cold"].append(time.perf_counter() - start)
        runtime.run(name, inputs[name])
        upcoming = rng.choice([n for n in names if n != name])
        prefetch = runtime.prefetch(upcoming)
        runtime.run(name, inputs[name])  # the prefetch reads while this runs
        prefetch.result()  # (a short request may finish first: wait for the read)
        start = time.perf_counter()
        runtime.switch(upcoming)
        times["prefetched"].append(time.perf_counter() - start)
        start = time.perf_counter()
        reload.switch(upcoming)
        times["reload"].append(time.perf_counter() - start)
        previous = upcoming
    return {f"{k}_us": 1e6 * float(np.median(v)) for k, v in times.items()}


def measure(quick: bool) -> dict:
    rounds, iterations = (1, 100) if quick else (3, 300)
    budget = OptimizeConfig(rounds=rounds, iterations=iterations)
    tasks = suite.load_suite(suite.TEN_TASKS)
    l1_bytes = parse_bytes(L1_BUDGET)
    separated = pack(
        *suite.packable(tasks),
        PackConfig(
            page_size=PAGE_SIZE,
            separation=SeparationConfig(l1_budget_bytes=l1_bytes),
            optimize=OptimizeConfig(**{**vars(budget), "lam": 0.1}),
        ),
    )
    print(
        f"\n== weight separation (WS), level-1 budget {L1_BUDGET}\n{format_report(separated.report)}"
    )
    pool_pages = separated.report["pool_pages"]  # the same level-1 bytes for both
    full = pack(
        *suite.packable(tasks),
        PackConfig(
            page_size=PAGE_SIZE,
            pool_pages=pool_pages,
            share_within_task=True,
            optimize=OptimizeConfig(**{**vars(budget), "lam": 10.0}),
        ),
    )
    print(f"\n== full sharing (NWV), pool {pool_pages} pages\n{format_report(full.report)}")
    rep = separated.report
    exclusive_pages = sum(t["exclusive_pages"] for t in rep["tasks"].values())
    numbers = {
        "l1_budget_bytes": l1_bytes,
        "l1_bytes": rep["l1_bytes"],
        "l2_bytes": rep["l2_bytes"],
        "ratio_count": rep["ratio_count"],
        "ratio_bytes": rep["ratio_bytes"],
        "pool_pages": rep["pool_pages"],
        "exclusive_pages": exclusive_pages,
        "full_sharing": {
            k: full.report[k]
            for k in ("mean_delta_pp", "worst_delta_pp", "ratio_bytes", "ratio_count", "l1_bytes")
        },
        "separation": {k: rep[k] for k in ("mean_delta_pp", "worst_delta_pp")},
        "tasks": {
            n: {
                "params": r["params"],
                "exclusive_pages": r["exclusive_pages"],
                "acc_separate": r["separate"],
                "acc_full_sharing": full.report["tasks"][n]["packed"],
                "acc_separation": r["packed"],
            }
            for n, r in rep["tasks"].items()
        },
        "optimize": vars(budget),
        "switch": _switch_latency(tasks, separated.plan, rep, 20 if quick else 60),
    }
    print(f"\nswitch with exclusive pages: {numbers['switch']}")
    return numbers


if __name__ == "__main__":
    run(__doc__, measure)
