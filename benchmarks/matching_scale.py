"""Greedy (NWV) vs optimal vs random page matching: total sharing cost and accuracy after
retraining on the 5-task suite, and matching speed (pages/second) on 10^3..10^6 pages."""

from __future__ import annotations

import time

import numpy as np

from benchmarks._common import run
from tvm_weightvirt.algorithms.matching import METHODS, PoolState, match_task
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.apps import suite
from tvm_weightvirt.frontend.packing import pack

PAGE_SIZE = 100
GROWTH = {"greedy": 2, "optimal": 1, "random": 1}  # time ~ n^k (optimal: blocks of 1024)


def _scale_case(n_pages: int, seed: int = 0):
    """One task of n pages onto a pool of n pages that all hold one earlier task: every page
    is at occupancy level 1, so the whole task is one level (the hardest case)."""
    rng = np.random.default_rng(seed)
    state = PoolState.empty(n_pages, PAGE_SIZE, init="weights", seed=seed)
    state.values[:] = rng.normal(0, 0.1, state.values.shape)
    state.fisher[:] = rng.exponential(1e-3, state.fisher.shape)
    state.occupancy[:] = 1
    pages = rng.normal(0, 0.1, (n_pages, PAGE_SIZE)).astype(np.float32)
    fisher = rng.exponential(1e-3, (n_pages, PAGE_SIZE))
    return state, pages, fisher


def measure(quick: bool) -> dict:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    time_cap = 60.0 if quick else 600.0
    # Part 1. Speed: pages per second, skipping sizes projected past the time cap.
    speed = {m: {} for m in METHODS}
    for method in METHODS:
        last = None
        for n in sizes:
            if last is not None:
                projected = last[1] * (n / last[0]) ** GROWTH[method]
                if projected > time_cap:
                    speed[method][str(n)] = {
                        "skipped": f"projected {projected:.0f} s > {time_cap:.0f} s"
                    }
                    print(f"{method:8s} {n:8d} pages: skipped (projected {projected:.0f} s)")
                    continue
            state, pages, fisher = _scale_case(n)
            start = time.perf_counter()
            match_task(state, pages, fisher, method)
            seconds = time.perf_counter() - start
            last = (n, seconds)
            speed[method][str(n)] = {"seconds": seconds, "pages_per_second": n / seconds}
            print(f"{method:8s} {n:8d} pages: {seconds:8.2f} s, {n / seconds:10.0f} pages/s")
    # Part 2. Quality on the suite: matching cost and accuracy after the same retraining.
    budget = (
        OptimizeConfig(rounds=1, iterations=100)
        if quick
        else OptimizeConfig(rounds=4, iterations=300)
    )
    tasks = suite.load_suite(suite.FIVE_TASKS)
    quality = {}
    for method in METHODS:
        report = pack(*suite.packable(tasks), PackConfig(match=method, optimize=budget)).report
        quality[method] = {
            "total_matching_cost": sum(t["matching_cost"] for t in report["tasks"].values()),
            "mean_delta_matched_pp": float(
                np.mean([t["matched"] - t["separate"] for t in report["tasks"].values()])
            ),
            "mean_delta_pp": report["mean_delta_pp"],
            "worst_delta_pp": report["worst_delta_pp"],
        }
        print(f"{method:8s} suite: {quality[method]}")
    return {"speed": speed, "suite": quality, "optimize": vars(budget)}


if __name__ == "__main__":
    run(__doc__, measure)
