"""Packing: Fisher -> (separation) -> page matching -> pool initialisation -> (SmartDeal pages)
-> joint retraining -> page plan.

No TVM here: each `PackTask` is a torch model with its splits and objective (`packing.pack`
makes them from any Task and TaskData). `report.pack_report` compares each task's metric as a
separate model with its metric through the packed pages, on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..coded_pages import CodedPages, check_coded_page_size
from ..layout import PageLayout, check_page_size, weight_alignment
from ..plan import PagePlan, TaskPages, check_unique_names
from ..progress import steps
from .configs import OptimizeConfig, PackConfig
from .data import Split
from .determinism import deterministic
from .importance import fill_missing, fisher_nwv, fisher_ws
from .matching import PoolState, finalize_pool, match_task
from .objectives import Objective, toward_original_outputs
from .optimize import (
    NWV_LAMBDA,
    WS_LAMBDA,
    PoolTask,
    optimize_pool,
    pool_outputs,
)
from .report import pack_report
from .separation import (
    BYTE_RULES,
    SeparationConfig,
    check_forced_pages_fit,
    level1_bytes,
    next_whole_task,
    refined_task_weights,
    select_exclusive,
    select_exclusive_by_bytes,
    select_exclusive_evenly,
    select_keeping_whole,
    shared_pages_for_budget,
    tpr_for_target_accuracy,
)
from .smartdeal import (
    WIDEST_FORMAT,
    coded_to_latent,
    decode_latent,
    encode_pages,
    latent_to_coded,
)
from .training import model_outputs


@dataclass
class PackResult:
    plan: PagePlan
    report: dict  # JSON-ready: per-task params/pages/metrics, bytes, ratios, matching cost


@dataclass
class PackTask:
    """What packing needs of one task: a torch model whose parameters carry the task's weight
    names (`weight_names`, if present, is the layout order; else `state_dict()` order), its
    train/val/test splits with `y` the targets its objective trains on, and the objective."""

    name: str
    model: torch.nn.Module
    splits: dict[str, Split]
    objective: Objective


def pack_models(
    tasks: list[PackTask],
    config: PackConfig = PackConfig(),
    resume: PagePlan | None = None,
) -> PackResult:
    """Pack tasks whose data were checked against their models (`packing.pack` does that).

    With `resume`, a plan saved earlier: its page tables, pool and exclusive pages are kept (no
    matching) and retraining continues from them, each task's latest weights as anchor.
    """
    check_page_size(config.page_size)
    if config.smartdeal:
        check_coded_page_size(config.page_size)
    if not tasks:
        raise ValueError("no tasks to pack")
    check_unique_names([t.name for t in tasks])
    if config.fisher_split not in ("train", "val"):
        raise ValueError(f"fisher_split must be 'train' or 'val', got {config.fisher_split!r}")
    if config.optimize.lam is None:  # NWV's lambda, or WS's with separation
        lam = WS_LAMBDA if config.separation else NWV_LAMBDA
        config = replace(config, optimize=replace(config.optimize, lam=lam))
    with deterministic(config.seed):
        return _pack(tasks, config, resume)


def _pack(tasks: list[PackTask], config: PackConfig, resume: PagePlan | None) -> PackResult:
    # Step 1. Layouts, and the pool size they allow (errors that need no Fisher come first).
    layouts, pages, weights_of = [], [], []
    for t in tasks:
        state = t.model.state_dict()
        # layout order = the task function's weight order (a TorchTwin knows it)
        names = getattr(t.model, "weight_names", None) or list(state)
        weights = {k: state[k].detach().numpy() for k in names}
        layout = PageLayout.from_weights(
            {k: (w.shape, str(w.dtype)) for k, w in weights.items()},
            config.page_size,
            t.name,
            weight_alignment(config.page_size, config.page_aligned),
        )
        layouts.append(layout)
        pages.append(layout.to_pages(weights))
        weights_of.append(weights)
    if resume is None:
        n_pool = _pool_pages(tasks, layouts, config)
    elif sorted(resume.tasks) != sorted(t.name for t in tasks) or any(
        resume.task(t.name).layout != layout for t, layout in zip(tasks, layouts)
    ):
        raise ValueError("the plan to resume does not have these tasks and layouts")
    # Step 2. Original-network Fisher (WS's normalised one with separation).
    fisher_of = fisher_ws if config.separation else fisher_nwv
    samples = config.fisher_samples or (50 if config.separation else 100)
    fishers = []
    for t, layout, weights in steps(zip(tasks, layouts, weights_of), "fisher tasks"):
        x = t.splits[config.fisher_split].x
        fisher = fisher_of(
            t.model,
            x,
            samples,
            seed=config.seed,
            likelihood=t.objective.fisher,
            batch_size=config.fisher_batch,
            desc=f"fisher '{t.name}' samples",
        )
        fishers.append(layout.to_pages(fill_missing(fisher, weights)))
    # Steps 3-4. Separation and matching (or the resumed plan), then joint retraining; the
    # byte rules' refinement packs again with the level-2 bytes moved toward the tasks whose
    # packed model lost most (`_Trained.refinement_losses`), and keeps the pack that lost least.
    if resume is not None:
        costs = {t.name: None for t in tasks}  # the resumed plan was matched elsewhere
        anchors = [resume.pages(t.name) for t in tasks]
        return _retrain(tasks, layouts, resume, fishers, anchors, costs, config).result(config)
    weights, whole = [1.0] * len(tasks), []
    rounds = config.separation.refine_rounds if config.separation is not None else 0
    if rounds == 0:
        plan, costs = _initial_plan(tasks, layouts, pages, fishers, n_pool, config, weights, whole)
        return _retrain(tasks, layouts, plan, fishers, pages, costs, config).result(config)
    train = [t.splits["train"] for t in tasks]
    separate = [t.objective.metric(model_outputs(t.model, s.x), s.y) for t, s in zip(tasks, train)]
    best, refinement = None, []
    for attempt in range(1 + rounds):
        plan, costs = _initial_plan(tasks, layouts, pages, fishers, n_pool, config, weights, whole)
        trained = _retrain(tasks, layouts, plan, fishers, pages, costs, config)
        losses = trained.refinement_losses(separate)
        refinement.append(
            {
                "pack": attempt,
                "task_weights": dict(zip(trained.names, weights)),
                "whole_tasks": [trained.names[i] for i in whole],
                "exclusive_pages": {n: t.n_exclusive_pages for n, t in plan.tasks.items()},
                "loss_pp": dict(zip(trained.names, losses)),
            }
        )
        # the worst task's loss first, then the mean; the earlier pack on a tie
        key = (max(losses), float(np.mean(losses)), attempt)
        if best is None or key < best[0]:
            best = (key, trained)
        if config.separation.refine_by == "whole_task":
            worst = next_whole_task(
                losses,
                whole,
                [layout.n_pages for layout in layouts],
                [plan.tasks[name].n_exclusive_pages for name in trained.names],
                page_bytes(config),
                config.separation.l2_budget_bytes,
                _max_shared(config, n_pool),
            )
            if isinstance(worst, str):  # no pack to try, and why
                if attempt < rounds:
                    refinement[-1]["stopped"] = worst
                break
            whole = [*whole, worst]
        else:
            weights = refined_task_weights(weights, losses)
    (*_, kept), trained = best
    for p in refinement:
        p["kept"] = p["pack"] == kept
    return trained.result(config, refinement)


@dataclass
class _Trained:
    """One pack's retrained plan, before its report."""

    tasks: list[PackTask]
    pool_tasks: list[PoolTask]
    plan: PagePlan
    memory: np.ndarray  # the plan's pool and exclusive pages as weights, stacked
    before: dict[str, float]  # test metric after matching, before retraining
    costs: dict[str, float | None]
    log: list[dict]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def refinement_losses(self, separate: list[float]) -> list[float]:
        """Per task, what packing cost it, for the byte rules' refinement: pp for percentage
        metrics, else percent. A task retrained on its targets: how much worse its own metric
        is on the training split than `separate` (the separate model's there; a gain counts
        as 0), since the validation split chose its checkpoints and reads optimistic. A task
        retrained toward its separate model's outputs fits them on the training inputs (the
        suite's pigcvp, distilled: 0 of 104 training inputs disagree, 21 of 104 validation
        and 24 of 104 test inputs do): how far it is from them on the validation inputs, by
        the metric that chose its checkpoints (100 - top-1 agreement, or relative error)."""
        losses = []
        for t, pt, alone in zip(self.tasks, self.pool_tasks, separate):
            if pt.objective.targets == "original_outputs":
                x, original = pt.val
                distance = pt.objective.metric(pool_outputs(self.memory, pt, x), original)
                worse = 100.0 - distance if pt.objective.percent else 100.0 * distance
            else:
                worse = alone - _task_metric(t, pt, self.memory, "train")
                worse = worse if t.objective.higher_is_better else -worse
                if not t.objective.percent:
                    worse = 100.0 * worse / abs(alone) if alone else 0.0
            losses.append(max(0.0, float(worse)))
        return losses

    def result(self, config: PackConfig, refinement: list[dict] | None = None) -> PackResult:
        non_finite = self.plan.non_finite()
        if non_finite:  # its metrics would be argmaxes of NaN: no result to report
            raise ValueError(
                "packing produced weights that are NaN or inf: "
                + "; ".join(non_finite)
                + " (matching or retraining diverged; nothing was kept)"
            )
        report = pack_report(
            self.tasks,
            self.pool_tasks,
            self.plan,
            self.memory,
            self.before,
            self.costs,
            self.log,
            config,
        )
        if refinement is not None:
            report["refinement"] = refinement
        return PackResult(self.plan, report)


def _task_metric(t: PackTask, pt: PoolTask, memory: np.ndarray, split: str) -> float:
    """The task's own metric on `split`, its weights read from `memory`; not `pt`'s objective,
    which retraining may have pointed at the separate model's outputs (`_retraining_fit`)."""
    data = t.splits[split]
    return t.objective.metric(pool_outputs(memory, pt, data.x), data.y)


def _retraining_fit(t: PackTask, optimize: OptimizeConfig) -> tuple[tuple, tuple, Objective]:
    """What joint retraining fits and selects checkpoints on for `t`: (train, val, objective).
    The splits' own targets under the task's objective, or with `optimize.distill_temperature`
    the separate model's outputs on both splits' inputs, under the objective toward them
    (checkpoints: the best agreement with the separate model on validation inputs)."""
    train, val = t.splits["train"], t.splits["val"]
    if optimize.distill_temperature is None:
        return (train.x, train.y), (val.x, val.y), t.objective
    objective = toward_original_outputs(t.objective, optimize.distill_temperature)
    return (
        (train.x, model_outputs(t.model, train.x)),
        (val.x, model_outputs(t.model, val.x)),
        objective,
    )


def _retrain(tasks, layouts, plan, fishers, anchors, costs, config) -> _Trained:
    """Step 4: joint retraining of the plan's pool and exclusive pages, as one memory."""
    memory, tables = plan.stacked_pages([t.name for t in tasks])
    pool_tasks = [
        PoolTask(
            t.name,
            t.model,
            layout,
            table,
            fisher,
            anchor,
            *_retraining_fit(t, config.optimize),
        )
        for t, layout, table, fisher, anchor in zip(tasks, layouts, tables, fishers, anchors)
    ]
    decode = decode_latent if config.smartdeal else None
    if config.smartdeal:
        # Step 4a. Every page becomes C @ B (SED); training sees C projected to powers of two.
        memory = coded_to_latent(encode_pages(memory))
    with torch.no_grad():
        weights = memory if decode is None else decode(torch.from_numpy(memory)).numpy()
    before = {pt.name: _task_metric(t, pt, weights, "test") for pt, t in zip(pool_tasks, tasks)}
    log = []
    if config.optimize.rounds > 0:
        memory, log = optimize_pool(memory, pool_tasks, config.optimize, decode)
    coded = latent_to_coded(memory) if config.smartdeal else None
    if coded is not None:
        memory = coded.decode()
    plan = _with_memory(plan, memory, coded)
    return _Trained(tasks, pool_tasks, plan, memory, before, costs, log)


def _pool_pages(tasks, layouts, config) -> int:
    """The pool size: configured, from the level-1 budget, or the largest task's pages (NWV);
    without separation, a pool too small for the largest task needs sharing within tasks."""
    task_pages = [layout.n_pages for layout in layouts]
    largest, each = max(task_pages), page_bytes(config)
    sep = config.separation
    l1_budget = sep.l1_budget_bytes if sep is not None else None
    if config.pool_pages is not None:
        n_pool = config.pool_pages
        needed = level1_bytes(n_pool, each, task_pages)
        if l1_budget is not None and needed > l1_budget:
            raise ValueError(
                f"a pool of {n_pool} pages needs {needed} B of level 1 with the page tables, "
                f"over its budget of {l1_budget} B: at most "
                f"{shared_pages_for_budget(l1_budget, each, task_pages)} pool pages fit (or "
                f"give only the pool size or only the level-1 budget)"
            )
    elif l1_budget is not None:
        n_pool = shared_pages_for_budget(l1_budget, each, task_pages)
    else:
        n_pool = largest
    if n_pool <= 0:
        raise ValueError(f"the pool needs at least one page, got {n_pool}")
    if sep is None and largest > n_pool and not config.share_within_task:
        name = next(t.name for t, layout in zip(tasks, layouts) if layout.n_pages == largest)
        raise ValueError(
            f"a pool of {n_pool} pages cannot hold task '{name}' ({largest} pages to share): "
            f"the minimum is {largest} pages, or allow sharing pages within a task"
        )
    if sep is not None and sep.rule in BYTE_RULES:  # the pages that must be exclusive fit level 2
        check_forced_pages_fit(
            task_pages,
            None if config.share_within_task else n_pool,
            each,
            sep.l2_budget_bytes,
            [t.name for t in tasks],
        )
    return n_pool


def _max_shared(config: PackConfig, n_pool: int) -> int | None:
    """With separation, how many of a task's pages can share (the rest must be exclusive)."""
    return None if config.share_within_task else n_pool


def _initial_plan(
    tasks, layouts, pages, fishers, n_pool, config, task_weights, whole
) -> tuple[PagePlan, dict]:
    """Exclusive pages (WS; by bytes, each task's Fisher share times its weight; or by bytes
    evenly; the tasks in `whole` keep every page exclusive), then NWV's matching of the shared
    ones, one task at a time."""
    sep = config.separation
    exclusive = [np.zeros(0, np.int64)] * len(tasks)
    if sep is not None:
        max_shared = _max_shared(config, n_pool)
        if sep.rule in BYTE_RULES:
            rule = select_exclusive_by_bytes if sep.rule == "bytes" else select_exclusive_evenly
            exclusive = select_keeping_whole(
                rule,
                whole,
                fishers,
                page_bytes(config),
                sep.l2_budget_bytes,
                max_shared,
                [t.name for t in tasks],
                task_weights,
            )
        else:
            tprs = _tprs(tasks, sep)
            exclusive = [
                select_exclusive(f, tpr, sep.margin, max_shared) for f, tpr in zip(fishers, tprs)
            ]
            _check_l2(exclusive, config, layouts, fishers, tprs)
    # with separation, a task's pages beyond the pool are forced exclusive (`max_shared`)
    shared = [np.setdiff1d(np.arange(layout.n_pages), e) for layout, e in zip(layouts, exclusive)]
    state = PoolState.empty(n_pool, config.page_size, config.init, config.seed)
    shared_tables, costs = [], {}
    matching = list(zip(tasks, pages, fishers, shared))
    for t, task_pages, fisher, ids in steps(matching, "matched tasks"):
        match = match_task(
            state,
            task_pages[ids],
            fisher[ids],
            config.match,
            seed=config.seed,
            share_within_task=config.share_within_task,
            task=t.name,
        )
        state.add(match.page_table, task_pages[ids], fisher[ids])
        shared_tables.append(match.page_table)
        costs[t.name] = match.cost
    pool = finalize_pool(
        state,
        shared_tables,
        [p[s] for p, s in zip(pages, shared)],
        [f[s] for f, s in zip(fishers, shared)],
    )
    task_pages = {}
    for t, layout, task_page, ids, excl, table_shared in zip(
        tasks, layouts, pages, shared, exclusive, shared_tables
    ):
        table = np.empty(layout.n_pages, np.int64)
        table[ids] = table_shared
        table[excl] = n_pool + np.arange(len(excl))  # exclusive page k of the task
        task_pages[t.name] = TaskPages(layout, table, task_page[excl])
    return PagePlan(config.page_size, pool, task_pages), costs


def _tprs(tasks, sep: SeparationConfig) -> list[float]:
    """Each task's tpr: the configured one, or WS's target-accuracy rule on its training split."""
    if sep.target_accuracy is None:
        return [sep.tpr] * len(tasks)
    tprs = []
    for t in tasks:
        if t.objective.targets != "labels":
            raise ValueError(
                f"task '{t.name}': the target-accuracy rule needs class labels "
                f"(objective '{t.objective.name}'): give a tpr instead"
            )
        probs = torch.softmax(torch.from_numpy(model_outputs(t.model, t.splits["train"].x)), 1)
        tprs.append(
            tpr_for_target_accuracy(probs.numpy(), t.splits["train"].y, sep.target_accuracy)
        )
    return tprs


def _check_l2(exclusive, config, layouts, fishers, tprs) -> None:
    """Fail early when the exclusive pages exceed the level-2 budget, naming a level-1 budget
    that would work."""
    sep = config.separation
    budget = sep.l2_budget_bytes
    each = page_bytes(config)
    needed = each * sum(len(e) for e in exclusive)
    if budget is None or needed <= budget:
        return
    task_pages = [layout.n_pages for layout in layouts]
    for n_pool in range(1, max(task_pages) + 1):
        l2 = each * sum(
            len(select_exclusive(f, tpr, sep.margin, n_pool)) for f, tpr in zip(fishers, tprs)
        )
        if l2 <= budget:
            raise ValueError(
                f"the exclusive pages need {needed} B of level-2 storage, over its budget of "
                f"{budget} B: a level-1 budget of {level1_bytes(n_pool, each, task_pages)} B "
                f"({n_pool} pool pages) or a level-2 budget of {needed} B would work"
            )
    raise ValueError(
        f"the exclusive pages need {needed} B of level-2 storage, over its budget "
        f"of {budget} B, at any pool size: lower tpr or raise the budget"
    )


def page_bytes(config: PackConfig) -> int:
    """One page's bytes as stored, what level-1 and level-2 budgets are spent in: float32
    weights, or (SmartDeal pages) codes in the widest format training can produce + a basis."""
    if config.smartdeal:
        return WIDEST_FORMAT.page_bytes(config.page_size)
    return 4 * config.page_size


def _with_memory(plan: PagePlan, memory: np.ndarray, coded: CodedPages | None) -> PagePlan:
    """The plan with pool and exclusive pages taken back from a trained memory (same order as
    `PagePlan.stacked_pages`); with `coded` (the memory's SmartDeal pages, one code format),
    pool and exclusive pages are stored coded."""
    n_pool, offset, task_pages = plan.n_pool_pages, plan.n_pool_pages, {}
    for name, t in plan.tasks.items():
        end = offset + t.n_exclusive_pages
        if coded is None or end == offset:
            task_pages[name] = TaskPages(t.layout, t.page_table, memory[offset:end])
        else:
            task_pages[name] = TaskPages(t.layout, t.page_table, coded=coded.rows(offset, end))
        offset = end
    if coded is not None:
        return PagePlan.from_coded(plan.page_size, coded.rows(0, n_pool), task_pages)
    return PagePlan(plan.page_size, memory[:n_pool], task_pages)
