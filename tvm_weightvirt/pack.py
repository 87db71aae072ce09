"""Packing: Fisher -> page matching -> pool initialisation -> joint retraining -> page plan.

No TVM here: tasks are torch models with data. `report` compares each task's accuracy as a
separate model with its accuracy through the packed pool, on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .importance import fill_missing, fisher_nwv
from .layout import PageLayout, check_page_size
from .matching import PoolState, finalize_pool, match_task
from .optimize import OptimizeConfig, PoolTask, optimize_pool, pool_accuracy
from .plan import PagePlan, TaskPages, check_unique_names


@dataclass
class PackConfig:
    page_size: int = 100
    pool_pages: int | None = None  # None: pages of the largest task (NWV's setting)
    share_within_task: bool = False  # needed for pools smaller than the largest task
    match: str = "greedy"
    init: str = "fisher_mean"
    fisher_samples: int = 100
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    seed: int = 0


@dataclass
class PackResult:
    plan: PagePlan
    report: dict  # JSON-ready: per-task params/pages/accuracies, bytes, ratios, matching cost


def pack_tasks(tasks: list, config: PackConfig = PackConfig(), progress: bool = True,
               resume: PagePlan | None = None) -> PackResult:
    """Pack suite-like tasks (`.name`, `.model`, `.splits` with train/val/test `Split`s and
    `.accuracy(split)` in percent, as `suite.SuiteTask`).

    With `resume`, a plan saved earlier: its page tables and pool are kept (no matching) and
    retraining continues from them, each task's latest weights (read from the pool) as anchor.
    """
    check_page_size(config.page_size)
    if not tasks:
        raise ValueError("no tasks to pack")
    check_unique_names([t.name for t in tasks])
    # Step 1. Layouts and original-network Fisher, page by page.
    layouts, pages, fishers = [], [], []
    for t in tasks:
        weights = {k: v.detach().numpy() for k, v in t.model.state_dict().items()}
        _check_data(t)
        layout = PageLayout.from_weights(
            {k: (w.shape, str(w.dtype)) for k, w in weights.items()}, config.page_size, t.name)
        fisher = fill_missing(fisher_nwv(t.model, t.splits["train"].x, config.fisher_samples,
                                         config.seed), weights)
        layouts.append(layout)
        pages.append(layout.to_pages(weights))
        fishers.append(layout.to_pages(fisher))
    # Step 2. Matching (or the resumed plan's tables and pool).
    if resume is not None:
        if sorted(resume.tasks) != sorted(t.name for t in tasks) or any(
                resume.task(t.name).layout != layout for t, layout in zip(tasks, layouts)):
            raise ValueError("the plan to resume does not have these tasks and layouts")
        tables = [resume.task(t.name).page_table for t in tasks]
        pool, costs = resume.pool.copy(), {t.name: float("nan") for t in tasks}
        anchors = [resume.task(t.name).layout.to_pages(resume.read(t.name)) for t in tasks]
    else:
        tables, pool, costs = _match(tasks, layouts, pages, fishers, config)
        anchors = pages
    # Step 3. Joint retraining with write-back.
    pool_tasks = [
        PoolTask(t.name, t.model, layout, table, fisher, anchor,
                 (t.splits["train"].x, t.splits["train"].y), (t.splits["val"].x, t.splits["val"].y))
        for t, layout, table, fisher, anchor in zip(tasks, layouts, tables, fishers, anchors)
    ]
    before = {pt.name: pool_accuracy(pool, pt, t.splits["test"].x, t.splits["test"].y)
              for pt, t in zip(pool_tasks, tasks)}
    if config.optimize.rounds > 0:
        pool, log = optimize_pool(pool, pool_tasks, config.optimize, progress)
    else:
        log = []
    plan = PagePlan(config.page_size, pool,
                    {t.name: TaskPages(layout, table) for t, layout, table in zip(tasks, layouts, tables)})
    return PackResult(plan, _report(tasks, pool_tasks, plan, before, costs, log, config))


def _match(tasks, layouts, pages, fishers, config):
    """NWV's matching, one task at a time (-mode=a); returns tables, initial pool, costs."""
    largest = max(layout.n_pages for layout in layouts)
    n_pool = largest if config.pool_pages is None else config.pool_pages
    if n_pool <= 0 or (n_pool < largest and not config.share_within_task):
        big = max(zip(layouts, tasks), key=lambda lt: lt[0].n_pages)[1].name
        raise ValueError(
            f"a pool of {n_pool} pages cannot hold task '{big}' ({largest} pages): the minimum "
            f"is {largest} pages, or allow sharing pages within a task")
    state = PoolState.empty(n_pool, config.page_size, config.init, config.seed)
    tables, costs = [], {}
    for t, task_pages, fisher in zip(tasks, pages, fishers):
        match = match_task(state, task_pages, fisher, config.match, seed=config.seed,
                           share_within_task=config.share_within_task, task=t.name)
        state.add(match.page_table, task_pages, fisher)
        tables.append(match.page_table)
        costs[t.name] = match.cost
    return tables, finalize_pool(state, tables, pages, fishers), costs


def _report(tasks, pool_tasks, plan, before, costs, log, config) -> dict:
    per_task = {}
    for t, pt in zip(tasks, pool_tasks):
        separate = t.accuracy("test")
        packed = pool_accuracy(plan.pool, pt, t.splits["test"].x, t.splits["test"].y)
        per_task[t.name] = {
            "params": pt.layout.n_weights,
            "pages": pt.layout.n_pages,
            "acc_separate": separate,
            "acc_matched": before[t.name],
            "acc_packed": packed,
            "delta_pp": packed - separate,
            "matching_cost": costs[t.name],
        }
    n_params = sum(v["params"] for v in per_task.values())
    bytes_separate = 4 * n_params
    bytes_packed = plan.pool_bytes + plan.page_table_bytes
    deltas = [v["delta_pp"] for v in per_task.values()]
    return {
        "page_size": plan.page_size,
        "share_within_task": config.share_within_task,
        "pool_pages": plan.n_pool_pages,
        "match": config.match,
        "init": config.init,
        "optimize": vars(config.optimize),
        "tasks": per_task,
        "bytes_separate": bytes_separate,
        "bytes_packed": bytes_packed,
        "ratio_bytes": bytes_separate / bytes_packed,
        "ratio_count": n_params / plan.pool.size,
        "mean_delta_pp": float(np.mean(deltas)),
        "worst_delta_pp": float(np.min(deltas)),
        "optimize_log": log,
    }


def format_report(report: dict) -> str:
    lines = [f"{'task':14s} {'params':>7s} {'pages':>5s} {'separate':>9s} {'matched':>8s} "
             f"{'packed':>7s} {'delta':>7s}"]
    for name, r in report["tasks"].items():
        lines.append(f"{name:14s} {r['params']:7d} {r['pages']:5d} {r['acc_separate']:8.2f}% "
                     f"{r['acc_matched']:7.2f}% {r['acc_packed']:6.2f}% {r['delta_pp']:+6.2f}pp")
    lines.append(
        f"pool {report['pool_pages']} pages x {report['page_size']}; bytes separate "
        f"{report['bytes_separate']} -> packed {report['bytes_packed']} "
        f"({report['ratio_bytes']:.2f}x bytes, {report['ratio_count']:.2f}x by count); "
        f"mean delta {report['mean_delta_pp']:+.2f} pp, worst {report['worst_delta_pp']:+.2f} pp")
    return "\n".join(lines)


def _check_data(task) -> None:
    """The task's data must fit its model: one forward pass on two training samples."""
    x = task.splits["train"].x
    try:
        with torch.no_grad():
            out = task.model(torch.from_numpy(x[:2]))
    except Exception as err:
        raise ValueError(
            f"task '{task.name}': training data of shape {tuple(x.shape[1:])} per sample does "
            f"not fit the model: {err}") from err
    n_classes = int(out.shape[1])
    labels = np.concatenate([s.y for s in task.splits.values()])
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"task '{task.name}': labels span [{labels.min()}, {labels.max()}], "
                         f"the model has {n_classes} classes")
