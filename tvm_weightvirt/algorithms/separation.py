"""Weight separation (WS seeds B.3): which pages of a task stay exclusive (level-2 storage)
and which go to the shared pool (level-1 memory), under byte budgets.

Pure numpy (no TVM).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..plan import PAGE_TABLE_IDS_UINT16, page_table_dtype

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_bytes(text: str | int) -> int:
    """'256KiB' -> 262144, '4MiB', '1.5MB', '1000' (bytes)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as bytes (e.g. 256KiB, 4MiB, 1.5MB, 1000)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


RULES = ("tpr", "bytes", "bytes_even")
BYTE_RULES = ("bytes", "bytes_even")  # the rules that spend a level-2 budget
REFINEMENTS = ("weights", "whole_task")  # how the byte rules' refinement moves level-2 bytes


@dataclass(frozen=True)
class SeparationConfig:
    """WS's defaults: tpr 1.0, margin 0.1 (exclusive pages cover ~90 % of the Fisher mass).
    With `target_accuracy` (a fraction), each task's tpr comes from WS's target-accuracy rule
    (`tpr_for_target_accuracy`) on its training split instead. With `rule="bytes"`, the
    level-2 budget is spent on the pages with the most Fisher share per byte across all tasks
    (`select_exclusive_by_bytes`) instead of each task covering a fixed share; with
    `rule="bytes_even"`, so that every task covers the same share (`select_exclusive_evenly`);
    with `refine_rounds`, either choice is then refined by what each task lost: its Fisher
    share weighted by the loss (`refine_by="weights"`, `refined_task_weights`), or the task that
    lost most keeping every page exclusive (`"whole_task"`, `next_whole_task`)."""

    tpr: float = 1.0
    margin: float = 0.1
    l1_budget_bytes: int | None = None  # shared pool + page tables (int32) in RAM
    l2_budget_bytes: int | None = None  # all exclusive pages in flash / eMMC / a file
    target_accuracy: float | None = None
    rule: str = "tpr"  # "tpr" (WS), "bytes" or "bytes_even"
    refine_rounds: int = 0  # byte rules: packs again, moved by what sharing cost, this often
    refine_by: str = "weights"  # "weights" or "whole_task"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"separation rule must be one of {RULES}, got {self.rule!r}")
        if self.rule in BYTE_RULES and self.l2_budget_bytes is None:
            raise ValueError(f"the {self.rule!r} separation rule spends a level-2 budget: give one")
        if self.refine_rounds < 0:
            raise ValueError(f"refine_rounds must be >= 0, got {self.refine_rounds}")
        if self.refine_rounds and self.rule not in BYTE_RULES:
            raise ValueError(
                "refine_rounds re-spends the level-2 budget of the byte separation rules: "
                f"it does nothing with rule {self.rule!r}"
            )
        if self.refine_by not in REFINEMENTS:
            raise ValueError(f"refine_by must be one of {REFINEMENTS}, got {self.refine_by!r}")


def contribution_density(page_fisher: np.ndarray) -> np.ndarray:
    """CD_p = sum Fisher(page p) / sum Fisher(task), for pages `[n, P]`."""
    sums = page_fisher.sum(1)
    total = sums.sum()
    return sums / total if total > 0 else np.zeros_like(sums)


def select_exclusive(
    page_fisher: np.ndarray, tpr: float = 1.0, margin: float = 0.1, max_shared: int | None = None
) -> np.ndarray:
    """Logical pages to keep exclusive, by descending CD: WS marks pages while
    `tpr - sum CD(selected) >= margin`, then forces the next-highest pages exclusive until at
    most `max_shared` pages remain to share. Returns sorted page indices."""
    cd = contribution_density(page_fisher)
    order = np.argsort(-cd, kind="stable")
    chosen, covered = 0, 0.0
    while chosen < len(order) and tpr - covered >= margin:
        covered += cd[order[chosen]]
        chosen += 1
    if max_shared is not None:
        chosen = max(chosen, len(order) - max_shared)
    return np.sort(order[:chosen])


def select_exclusive_by_bytes(
    page_fishers: list[np.ndarray],
    page_bytes: int,
    budget_bytes: int,
    max_shared: int | None = None,
    names: list[str] | None = None,
    task_weights: list[float] | None = None,
) -> list[np.ndarray]:
    """Logical pages to keep exclusive, per task, within `budget_bytes` of level-2 storage.

    A task with more pages than `max_shared` keeps its highest-CD pages beyond that exclusive
    first (it has nowhere else to put them). The rest of the budget goes to the pages with the
    most Fisher share (CD, each task's mass normalised to 1, so every task counts alike, or
    times its `task_weights` entry) per byte, across all tasks, highest first. The choice is a
    prefix of one order: a larger budget never keeps fewer pages exclusive, and neither does a
    larger weight for its task. Returns sorted page indices per task."""
    weights = task_weights or [1.0] * len(page_fishers)
    cds = [w * contribution_density(f) for w, f in zip(weights, page_fishers)]
    orders = [np.argsort(-cd, kind="stable") for cd in cds]
    # per task: how many of its top pages must be exclusive
    forced = check_forced_pages_fit(
        [len(cd) for cd in cds], max_shared, page_bytes, budget_bytes, names
    )
    needed = page_bytes * sum(forced)
    candidates = sorted(  # a task's pages come in its CD order (ties: by rank)
        (-cds[i][p] / page_bytes, i, rank)
        for i, order in enumerate(orders)
        for rank, p in enumerate(order[forced[i] :], start=forced[i])
        if cds[i][p] > 0  # a page without Fisher mass buys nothing
    )
    chosen = list(forced)
    for _, i, _ in candidates[: (budget_bytes - needed) // page_bytes]:
        chosen[i] += 1
    return [np.sort(order[:n]) for order, n in zip(orders, chosen)]


def select_exclusive_evenly(
    page_fishers: list[np.ndarray],
    page_bytes: int,
    budget_bytes: int,
    max_shared: int | None = None,
    names: list[str] | None = None,
    task_weights: list[float] | None = None,
) -> list[np.ndarray]:
    """Logical pages to keep exclusive, per task, within `budget_bytes` of level-2 storage, so
    that the task whose Fisher mass is least covered is covered as much as the budget allows.

    `select_exclusive_by_bytes` maximises the covered share summed over tasks: a task whose
    mass is spread over many pages (each page a small share) gets few. This rule serves the
    worst task instead: after the forced pages (as there), each page goes to the task whose
    uncovered share (1 - CD of its exclusive pages, times its `task_weights` entry) is the
    largest, its highest-CD page next; so every task ends up leaving about the same weighted
    share uncovered (a task of weight 4, a quarter of the others'). The choice is a prefix of
    one order: a larger budget never keeps fewer pages exclusive. Returns sorted page indices
    per task."""
    weights = task_weights or [1.0] * len(page_fishers)
    cds = [contribution_density(f) for f in page_fishers]
    orders = [np.argsort(-cd, kind="stable") for cd in cds]
    chosen = check_forced_pages_fit(
        [len(cd) for cd in cds], max_shared, page_bytes, budget_bytes, names
    )
    covered = [float(cd[order[:n]].sum()) for cd, order, n in zip(cds, orders, chosen)]

    def has_more(i: int) -> bool:  # a page without Fisher mass buys nothing
        return chosen[i] < len(cds[i]) and cds[i][orders[i][chosen[i]]] > 0

    def entry(i: int) -> tuple[float, int]:  # the most weighted uncovered share first
        return (-weights[i] * (1.0 - covered[i]), i)  # ties: the earlier task

    most_uncovered = [entry(i) for i in range(len(cds)) if has_more(i)]
    heapq.heapify(most_uncovered)
    for _ in range((budget_bytes - page_bytes * sum(chosen)) // page_bytes):
        if not most_uncovered:
            break
        _, i = heapq.heappop(most_uncovered)
        covered[i] += float(cds[i][orders[i][chosen[i]]])
        chosen[i] += 1
        if has_more(i):
            heapq.heappush(most_uncovered, entry(i))
    return [np.sort(order[:n]) for order, n in zip(orders, chosen)]


def select_keeping_whole(
    rule: Callable[..., list[np.ndarray]],
    whole: list[int],
    page_fishers: list[np.ndarray],
    page_bytes: int,
    budget_bytes: int,
    max_shared: int | None = None,
    names: list[str] | None = None,
    task_weights: list[float] | None = None,
) -> list[np.ndarray]:
    """`rule` (`select_exclusive_by_bytes` or `select_exclusive_evenly`) with every page of the
    tasks in `whole` exclusive: the rule spends what their pages leave of `budget_bytes` on
    the other tasks. Returns sorted page indices per task."""
    n_pages = [len(f) for f in page_fishers]
    rest = [i for i in range(len(n_pages)) if i not in whole]
    chosen = rule(
        [page_fishers[i] for i in rest],
        page_bytes,
        budget_bytes - page_bytes * sum(n_pages[i] for i in whole),
        max_shared,
        names and [names[i] for i in rest],
        task_weights and [task_weights[i] for i in rest],
    )
    exclusive = [np.arange(n) for n in n_pages]
    for i, pages in zip(rest, chosen):
        exclusive[i] = pages
    return exclusive


# why `next_whole_task` has no task to keep whole (a refinement report's "stopped")
NOTHING_LOST = "no task that shares pages lost anything"
WORST_DOES_NOT_FIT = "the task that lost most does not fit the level-2 budget whole"


def next_whole_task(
    losses_pp: list[float],
    whole: list[int],
    n_pages: list[int],
    exclusive_pages: list[int],
    page_bytes: int,
    budget_bytes: int,
    max_shared: int | None = None,
) -> int | str:
    """The whole-task refinement: after a pack, the task that lost most (`losses_pp`, as for
    `refined_task_weights`) among those that share pages (fewer `exclusive_pages` than
    `n_pages`: keeping a task whole that already has every page exclusive would pack the same
    plan again) keeps all of its pages exclusive in the next one, beside the tasks already
    `whole`. Sharing even a small part of a task can cost it much: the suite's pigcvp
    (distilled, 48 KiB) disagrees with its separate model on 24 of 104 test inputs with 395
    of its 694 pages exclusive, 23-28 with ~600, 9-12 with all. Returns that task's index, or
    why there is none: no task that shares pages lost anything, or the one that lost most does
    not fit the budget with the others' pages that must be exclusive (beyond `max_shared`)."""
    candidates = [
        i
        for i, (loss, n, exclusive) in enumerate(zip(losses_pp, n_pages, exclusive_pages))
        if loss > 0 and exclusive < n
    ]
    if not candidates:
        return NOTHING_LOST
    worst = max(candidates, key=lambda i: (losses_pp[i], -i))  # ties: the earlier task
    keep = [*whole, worst]
    forced = forced_pages(n_pages, max_shared)
    needed = sum(n_pages[i] if i in keep else forced[i] for i in range(len(n_pages)))
    return worst if page_bytes * needed <= budget_bytes else WORST_DOES_NOT_FIT


def forced_pages(n_pages: list[int], max_shared: int | None) -> list[int]:
    """Per task, how many pages must be exclusive: those beyond `max_shared` (a pool that
    cannot hold them all, without sharing within the task)."""
    return [0 if max_shared is None else max(0, n - max_shared) for n in n_pages]


def check_forced_pages_fit(
    n_pages: list[int],
    max_shared: int | None,
    page_bytes: int,
    budget_bytes: int,
    names: list[str] | None = None,
) -> list[int]:
    """Per task, the pages beyond `max_shared` that must be exclusive (they have nowhere else
    to go); raises if they alone pass the level-2 budget. Needs only the layouts."""
    names = names or [f"task {i}" for i in range(len(n_pages))]
    forced = forced_pages(n_pages, max_shared)
    needed = page_bytes * sum(forced)
    if needed > budget_bytes:
        worst = max(range(len(forced)), key=lambda i: forced[i])
        raise ValueError(
            f"the pages that do not fit the pool ({sum(forced)}, {forced[worst]} of them "
            f"'{names[worst]}') need {needed} B of level-2 storage, over its budget of "
            f"{budget_bytes} B: raise the level-2 or the level-1 budget"
        )
    return forced


def refined_task_weights(weights: list[float], losses_pp: list[float]) -> list[float]:
    """The byte rules' refinement: after a pack, each task's Fisher share (the even rule: its
    uncovered share) counts (1 + what its packed model lost, in pp) times more in the next
    choice, so the level-2 bytes move toward the tasks sharing hurt most. What a task lost is
    read where it shows (`pipeline._Trained.refinement_losses`): on the training split, or,
    retrained toward its separate model, as its distance from it on validation inputs."""
    return [w * (1.0 + max(0.0, loss)) for w, loss in zip(weights, losses_pp)]


def tpr_for_target_accuracy(
    probs: np.ndarray, labels: np.ndarray, target_acc: float, alpha: float = 0.5
) -> float:
    """WS's target-accuracy rule: with p^ the softmax L2-normalised per sample, L the mean of
    -log p(label) over samples whose p^(label) <= alpha, and acc_a the fraction above alpha,
    `L_target = L (acc_a + 1 - target_acc)` and `tpr = max(0, 1 - (L_target - L) / L)`."""
    normalised = probs / np.linalg.norm(probs, axis=1, keepdims=True)
    at_label = normalised[np.arange(len(labels)), labels]
    low = at_label <= alpha
    if not low.any():
        return 0.0
    loss = float(np.mean(-np.log(probs[np.arange(len(labels)), labels][low] + 1e-12)))
    acc_alpha = float(np.mean(~low))
    target_loss = loss * (acc_alpha + 1 - target_acc)
    return max(0.0, 1 - (target_loss - loss) / loss)


def level1_bytes(n_pool: int, page_bytes: int, task_pages: list[int]) -> int:
    """Level 1 for a pool of `n_pool` pages of `page_bytes` each and the page tables of tasks
    of `task_pages` pages each: uint16 tables while the pool and the largest task (all of whose
    pages may be exclusive) stay within their ids (`page_table_dtype`), else int32."""
    entries, most = sum(task_pages), max(task_pages)
    return n_pool * page_bytes + entries * page_table_dtype(n_pool + most).itemsize


def shared_pages_for_budget(l1_budget_bytes: int, page_bytes: int, task_pages: list[int]) -> int:
    """The most pool pages of `page_bytes` each whose `level1_bytes` fit in a level-1 budget."""
    entries, most = sum(task_pages), max(task_pages)
    uint16_pages = min((l1_budget_bytes - 2 * entries) // page_bytes, PAGE_TABLE_IDS_UINT16 - most)
    pages = max(uint16_pages, (l1_budget_bytes - 4 * entries) // page_bytes)
    if pages < 1:
        table_bytes = 2 * entries
        raise ValueError(
            f"level-1 budget of {l1_budget_bytes} B cannot hold the page tables ({table_bytes} B) "
            f"and one pool page ({page_bytes} B): the minimum is {table_bytes + page_bytes} B"
        )
    return int(pages)
