"""The bytes-fidelity trade of a few pool sizes, and the smallest pool that keeps a fidelity
target (`wvirt pack --explore 0.75,0.5,0.35 --max-error 0.05`).

The default pool holds the largest task's pages (NWV): when one model dominates, sharing saves
little (three stages of 6.6k, 100k and 389k weights: 1.27x). Smaller pools (pages shared within a
task too) save more and cost fidelity; how much depends on the models, so this packs at each
size, largest first, and keeps the smallest whose every targeted task meets the target **on
its validation split** (the test split only reports): `max_error` bounds relative output errors
(distilled values, the worst output of a model of several), `min_agreement` bounds percentages
(top-1 agreement, accuracy). Packing stops at the first size that misses the target: a
smaller pool shares more and is not expected to do better.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from ..algorithms.data import TaskData
from ..algorithms.pipeline import PackConfig, PackResult
from ..plan import PagePlan
from .packing import pack
from .task import Task

log = logging.getLogger(__name__)

ERROR_METRICS = ("relative_error", "worst_relative_error")


@dataclass
class Exploration:
    """Each pool size tried (`rows`: fraction, pool pages, bytes ratio, per task its
    validation metric and whether it met the target) and the chosen pack (None: no size
    met it)."""

    rows: list[dict] = field(default_factory=list)
    chosen: PackResult | None = None

    def table(self) -> str:
        lines = [f"{'pool':>6s} {'pages':>6s} {'bytes':>7s}  validation (target met)"]
        for r in self.rows:
            tasks = ", ".join(
                f"{n} {v['validation']:.4g}{'' if v['met'] is None else ' ok' if v['met'] else ' MISS'}"
                for n, v in r["tasks"].items()
            )
            lines.append(
                f"{r['fraction']:6.2f} {r['pool_pages']:6d} {r['ratio_bytes']:6.2f}x  {tasks}"
            )
        return "\n".join(lines)


def explore_pool_sizes(
    tasks: list[Task],
    data: dict[str, TaskData],
    fractions: list[float],
    config: PackConfig = PackConfig(),
    max_error: float | None = None,
    min_agreement: float | None = None,
) -> Exploration:
    """Pack at pools of each of `fractions` of the tasks' pages (largest first) and choose the
    smallest whose targeted tasks all meet `max_error` / `min_agreement` on validation."""
    if max_error is None and min_agreement is None:
        raise ValueError("exploring pool sizes needs a target: max_error or min_agreement")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"pool fractions must be in (0, 1], got {fractions}")
    if config.pool_pages is not None or config.separation is not None:
        raise ValueError(
            "exploring pool sizes sets the pool size itself: give no pool_pages and no "
            "separation budget"
        )
    pages = PagePlan.lossless(tasks, page_size=config.page_size).n_pool_pages
    exploration = Exploration()
    for fraction in sorted(set(fractions), reverse=True):
        sized = replace(config, pool_pages=max(1, round(fraction * pages)), share_within_task=True)
        log.info("pool of %.2f of the pages: %d pages", fraction, sized.pool_pages)
        result = pack(tasks, data, sized)
        row = _row(fraction, result.report, max_error, min_agreement)
        exploration.rows.append(row)
        if not any(v["met"] is not None for v in row["tasks"].values()):
            raise ValueError(
                "no task has a metric the target applies to (max_error: relative errors of "
                "distilled outputs; min_agreement: percentages such as top-1 agreement)"
            )
        if not all(v["met"] in (True, None) for v in row["tasks"].values()):
            break
        exploration.chosen = result
    return exploration


def _row(fraction: float, report: dict, max_error, min_agreement) -> dict:
    tasks = {}
    for name, r in report["tasks"].items():
        value = r["validation"]
        if r["metric"] in ERROR_METRICS and max_error is not None:
            met = value <= max_error
        elif r["percent"] and min_agreement is not None:
            met = value >= min_agreement
        else:
            met = None  # the target says nothing about this metric
        tasks[name] = {"metric": r["metric"], "validation": value, "met": met}
    return {
        "fraction": fraction,
        "pool_pages": report["pool_pages"],
        "ratio_bytes": report["ratio_bytes"],
        "tasks": tasks,
    }
