"""Greedy (NWV) vs fast vs optimal vs random page matching on the 5-task suite: total sharing
cost and accuracy after the same retraining. (Speed at 10^3..10^6 pages: `benchmarks.scale`.)"""

from __future__ import annotations

import numpy as np

from benchmarks._common import run
from tvm_weightvirt.algorithms.matching import METHODS
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.apps import suite
from tvm_weightvirt.frontend.packing import pack


def measure(quick: bool) -> dict:
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
    return {"suite": quality, "optimize": vars(budget)}


if __name__ == "__main__":
    run(__doc__, measure)
