"""SmartDeal on the 5-task suite: (a) separate dense models, (b) SmartDeal alone (projection of
the trained weights, then train-then-project recovery chosen on validation), (c) paging alone,
(d) both: SmartDeal pages (power-of-two codes + a 3x3 basis per page) in a shared pool sized
for 1/16 of (a)'s bytes, trained jointly with straight-through projection."""

from __future__ import annotations

import copy

import numpy as np

from benchmarks._common import run
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.separation import shared_pages_for_budget
from tvm_weightvirt.algorithms.smartdeal import train_then_project
from tvm_weightvirt.apps import suite
from tvm_weightvirt.coded_pages import byte_code_page_bytes
from tvm_weightvirt.frontend.packing import pack
from tvm_weightvirt.layout import PageLayout

TARGET_RATIO = 16  # the goal for (d)
CODED_PAGE_SIZE = 96  # rows of 3 coefficients


def _summary(bytes_total: float, separate_bytes: int, deltas: list[float]) -> dict:
    return {
        "bytes": bytes_total,
        "ratio": separate_bytes / bytes_total,
        "mean_delta_pp": float(np.mean(deltas)),
        "worst_delta_pp": float(np.min(deltas)),
    }


def measure(quick: bool) -> dict:
    tasks = suite.load_suite(suite.FIVE_TASKS)
    separate_bytes = sum(4 * sum(p.numel() for p in t.model.state_dict().values()) for t in tasks)
    # (b) SmartDeal alone: every covered weight projected to C @ B, then recovery rounds.
    rounds = 1 if quick else 4
    formula, stored, deltas, per_task = 0.0, 0, [], {}
    for t in tasks:
        model, report, history = train_then_project(
            copy.deepcopy(t.model),
            (t.splits["train"].x, t.splits["train"].y),
            (t.splits["val"].x, t.splits["val"].y),
            rounds=rounds,
            iterations=200,
        )
        accuracy = t.accuracy("test", model)
        formula += report.formula_bytes
        stored += report.stored_bytes
        deltas.append(accuracy - t.accuracy())
        per_task[t.name] = {
            "acc_separate": t.accuracy(),
            "acc_smartdeal": accuracy,
            "val_history": history,
            "dense_weights": report.dense,
        }
        print(f"{t.name:14s} {t.accuracy():6.2f}% -> {accuracy:6.2f}%  left dense: {report.dense}")
    smartdeal = _summary(stored, separate_bytes, deltas) | {
        "formula_bytes": formula,
        "ratio_formula": separate_bytes / formula,
    }
    # (c) paging alone at NWV's pool size.
    budget = (
        OptimizeConfig(rounds=1, iterations=100)
        if quick
        else OptimizeConfig(rounds=4, iterations=300)
    )
    paged = pack(*suite.packable(tasks), PackConfig(optimize=budget)).report
    paging = _summary(
        paged["bytes_packed"], separate_bytes, [r["delta"] for r in paged["tasks"].values()]
    )
    # (d) both: as many coded pool pages as fit 1/16 of the separate bytes beside the tables.
    task_pages = [
        PageLayout.from_weights(
            {k: (tuple(v.shape), "float32") for k, v in t.model.state_dict().items()},
            CODED_PAGE_SIZE,
        ).n_pages
        for t in tasks
    ]
    # the pool sized as if a page took a byte per code and a float32 basis (96 + 36 B), the
    # format before codes were packed and bases were float16; what is stored takes less
    pool_pages = shared_pages_for_budget(
        separate_bytes // TARGET_RATIO, byte_code_page_bytes(CODED_PAGE_SIZE), task_pages
    )
    both_report = pack(
        *suite.packable(tasks),
        PackConfig(
            page_size=CODED_PAGE_SIZE,
            pool_pages=pool_pages,
            share_within_task=True,
            smartdeal=True,
            optimize=budget,
        ),
    ).report
    for name, r in both_report["tasks"].items():
        per_task[name]["acc_both"] = r["packed"]
    both = _summary(
        both_report["bytes_packed"],
        separate_bytes,
        [r["delta"] for r in both_report["tasks"].values()],
    ) | {
        "formula_bytes": both_report["smartdeal"]["formula_bytes"],
        "ratio_formula": separate_bytes / both_report["smartdeal"]["formula_bytes"],
        "pool_pages": pool_pages,
        "page_size": CODED_PAGE_SIZE,
        "nonzero_fraction": both_report["smartdeal"]["nonzero_fraction"],
    }
    numbers = {
        "separate": {
            "bytes": separate_bytes,
            "ratio": 1.0,
            "mean_delta_pp": 0.0,
            "worst_delta_pp": 0.0,
        },
        "smartdeal": smartdeal,
        "paging": paging,
        "both": both,
        "tasks": per_task,
    }
    for key in ("separate", "smartdeal", "paging", "both"):
        r = numbers[key]
        print(
            f"{key:10s} {r['bytes']:10.0f} B  {r['ratio']:5.2f}x  mean {r['mean_delta_pp']:+.2f} pp  "
            f"worst {r['worst_delta_pp']:+.2f} pp"
        )
    return numbers


if __name__ == "__main__":
    run(__doc__, measure)
