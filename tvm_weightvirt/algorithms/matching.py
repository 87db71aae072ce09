"""Weight-page matching: which pool page holds each page of a new task (NWV seeds A.4).

Pure numpy/scipy (no TVM). Tasks are added one at a time against a `PoolState`: the pool's
contents, the summed original Fisher of the tasks already on each position, and each page's
occupancy. Complexity per level of n pages, P weights/page: greedy O(n^2 P) (NWV's argmin
scan), fast O(n W P) (NWV's greedy rule within windows of W pages of neighbouring Fisher
rank), optimal O(n B^2) with blocks of B pages (O(n^3) unblocked), random O(n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

METHODS = ("greedy", "fast", "optimal", "random")
BLOCK = {"fast": 2048, "optimal": 1024}  # default pages per window (fast) / block (optimal)
INITS = ("random", "weights", "fisher_mean")


def add_rows(target: np.ndarray, rows: np.ndarray, values) -> None:
    """`target[rows] += values` where `rows` may repeat (`np.add.at`); by plain indexing when
    they do not (a task's pages on distinct pool pages), the same sums many times faster."""
    if len(np.unique(rows)) == len(rows):
        target[rows] += values
    else:
        np.add.at(target, rows, values)


@dataclass
class PoolState:
    """The pool while tasks are matched onto it.

    `init` says what the pool holds when matching compares a task's page with a pool page:
    "random" — N(0, 0.01^2) as NWV's scripts leave it (nothing is written while matching);
    "weights" / "fisher_mean" — each free page takes the first task's weights that land on it
    (shared pages keep them); "fisher_mean" then averages every position over the tasks on it,
    weighted by their Fisher (`finalize`).
    """

    values: np.ndarray  # [S, P] float32
    fisher: np.ndarray  # [S, P] float64, summed original Fisher of the tasks on each position
    occupancy: np.ndarray  # [S] (task, logical page) entries on each page
    init: str

    @staticmethod
    def empty(n_pages: int, page_size: int, init: str = "fisher_mean", seed: int = 0) -> PoolState:
        if init not in INITS:
            raise ValueError(f"pool init must be one of {INITS}, got {init!r}")
        if n_pages <= 0:
            raise ValueError(f"the pool needs at least one page, got {n_pages}")
        values = (
            np.random.default_rng(seed).normal(0, 0.01, (n_pages, page_size)).astype(np.float32)
        )
        return PoolState(values, np.zeros((n_pages, page_size)), np.zeros(n_pages, np.int64), init)

    @property
    def n_pages(self) -> int:
        return int(self.values.shape[0])

    def add(self, table: np.ndarray, pages: np.ndarray, fisher: np.ndarray) -> None:
        """Record a matched task: its pages `[n, P]` with Fisher `[n, P]` on pool pages `table`."""
        if self.init != "random":
            free = self.occupancy[table] == 0
            self.values[table[free]] = pages[free]
        add_rows(self.occupancy, table, 1)
        add_rows(self.fisher, table, fisher)


def finalize_pool(
    state: PoolState, tables: list[np.ndarray], pages: list[np.ndarray], fishers: list[np.ndarray]
) -> np.ndarray:
    """The pool's initial contents after all tasks are matched (see `PoolState.init`)."""
    if state.init != "fisher_mean":
        return state.values.copy()
    weighted = np.zeros(state.values.shape)
    total = np.zeros(state.values.shape)
    plain = np.zeros(state.values.shape)
    for table, task_pages, fisher in zip(tables, pages, fishers):
        add_rows(weighted, table, fisher * task_pages)
        add_rows(total, table, fisher)
        add_rows(plain, table, task_pages)
    count = np.maximum(1, state.occupancy)[:, None]
    mean = np.where(total > 0, weighted / np.where(total > 0, total, 1), plain / count)
    used = state.occupancy > 0
    out = state.values.copy()
    out[used] = mean[used]
    return out.astype(np.float32)


@dataclass
class Match:
    page_table: np.ndarray  # [n] pool page of each logical page
    cost: float  # total sharing cost of the chosen pairs (NWV's cost, at matching time)


def match_task(
    state: PoolState,
    pages: np.ndarray,
    fisher: np.ndarray,
    method: str = "greedy",
    block: int | None = None,
    seed: int = 0,
    share_within_task: bool = False,
    task: str = "?",
) -> Match:
    """Place one task's pages `[n, P]` (Fisher `[n, P]`) on the pool, level by level.

    The first task on an empty pool takes pages 0..n-1 (NWV). Then NWV's occupation-level
    loop: pool pages used by exactly k tasks are filled first for
    k = 0, 1, 2, ... At each level both lists are sorted by Fisher-sum, descending; surplus task
    pages (the lowest) wait for the next level, surplus pool pages (the highest) are left alone.
    Then `method` pairs them: "greedy" (NWV: anchor = the larger remaining Fisher-sum, partner =
    minimum sharing cost), "fast" (NWV's greedy rule within windows of `block` pages by Fisher
    rank: the same pairs as greedy on a level of up to `block` pages, up to float32 ties),
    "optimal" (minimum total cost, `linear_sum_assignment`, in blocks of `block` pages by
    Fisher rank), or "random"; `block` defaults to `BLOCK[method]`. A task's pages land on
    distinct pool pages while the pool has room. A pool smaller than the task is an error unless
    `share_within_task`: then, once every pool page holds one of the task's pages, its
    remaining pages share too.
    """
    if method not in METHODS:
        raise ValueError(f"matching method must be one of {METHODS}, got {method!r}")
    n = pages.shape[0]
    if n > state.n_pages and not share_within_task:
        raise ValueError(
            f"task '{task}' has {n} pages but the pool has {state.n_pages}: the minimum pool "
            f"without sharing pages within a task is {n} pages (or share pages within the task)"
        )
    if not state.occupancy.any() and n <= state.n_pages:
        return Match(np.arange(n), 0.0)  # NWV: the first task maps onto pages 0..n-1
    rng = np.random.default_rng(seed)
    block = block or BLOCK.get(method, 0)
    table = np.full(n, -1, np.int64)
    occupancy = state.occupancy.copy()
    used_by_task = np.zeros(state.n_pages, bool)
    waiting = np.arange(n)
    page_fisher = fisher.sum(1)
    total_cost = 0.0
    while waiting.size:
        if used_by_task.all():  # pool smaller than the task: its own pages are shared too
            used_by_task[:] = False
        open_pages = np.flatnonzero(~used_by_task)
        level = occupancy[open_pages].min()
        candidates = open_pages[occupancy[open_pages] == level]
        # Step 1. Both lists by Fisher-sum, descending; trim the surplus as NWV does.
        q = waiting[np.argsort(-page_fisher[waiting], kind="stable")]
        v = candidates[np.argsort(-state.fisher[candidates].sum(1), kind="stable")]
        if len(q) > len(v):
            q = q[: len(v)]  # the lowest-Fisher task pages wait for the next level
        elif len(v) > len(q):
            v = v[len(v) - len(q) :]  # the highest-Fisher pool pages are left untouched
        # Step 2. Pair them.
        if method == "greedy":
            qs, vs = _pair_greedy(q, v, pages, fisher, state)
        elif method == "fast":
            qs, vs = _pair_fast(q, v, pages, fisher, state, block)
        elif method == "optimal":
            qs, vs = _pair_optimal(q, v, pages, fisher, state, block)
        else:
            qs, vs = q, rng.permutation(v)
        total_cost += _total_cost(pages, fisher, state, qs, vs)
        table[qs] = vs
        occupancy[vs] += 1
        used_by_task[vs] = True
        waiting = np.setdiff1d(waiting, qs)
    return Match(table, total_cost)


def _cost_rows(
    w: np.ndarray, f: np.ndarray, other_w: np.ndarray, other_f: np.ndarray
) -> np.ndarray:
    """NWV's sharing cost of one page (w, f: [P]) against many ([m, P]):
    sum over positions where both Fishers are > 0 of (f + f') (w - w')^2."""
    both = (f > 0) & (other_f > 0)
    return np.where(both, (f + other_f) * (w - other_w) ** 2, 0.0).sum(1)


def _total_cost(pages, fisher, state, qs, vs, chunk: int = 1 << 16) -> float:
    """The summed cost of pairs (task page qs[i], pool page vs[i]), `chunk` pairs at a time
    (memory: a few chunks of pages, not copies of the whole level)."""
    total = 0.0
    for start in range(0, len(qs), chunk):
        q, v = qs[start : start + chunk], vs[start : start + chunk]
        total += float(_cost_pairs(pages[q], fisher[q], state.values[v], state.fisher[v]).sum())
    return total


def _cost_pairs(w, f, v, fv) -> np.ndarray:
    both = (f > 0) & (fv > 0)
    return np.where(both, (f + fv) * (w - v) ** 2, 0.0).sum(1)


def _pair_greedy(q, v, pages, fisher, state) -> tuple[np.ndarray, np.ndarray]:
    """NWV's PageAlloc: repeatedly anchor the larger Fisher-sum head, exact argmin partner."""
    q_sum = fisher[q].sum(1)
    v_sum = state.fisher[v].sum(1)
    q_left, v_left = np.ones(len(q), bool), np.ones(len(v), bool)
    pairs = []
    for _ in range(len(q)):
        qi, vi = int(np.argmax(q_left)), int(np.argmax(v_left))  # heads: lists are sorted
        if q_sum[qi] >= v_sum[vi]:
            open_v = np.flatnonzero(v_left)
            costs = _cost_rows(
                pages[q[qi]], fisher[q[qi]], state.values[v[open_v]], state.fisher[v[open_v]]
            )
            vi = int(open_v[np.argmin(costs)])
        else:
            open_q = np.flatnonzero(q_left)
            costs = _cost_rows(
                state.values[v[vi]], state.fisher[v[vi]], pages[q[open_q]], fisher[q[open_q]]
            )
            qi = int(open_q[np.argmin(costs)])
        pairs.append((int(q[qi]), int(v[vi])))
        q_left[qi] = v_left[vi] = False
    return tuple(np.array(side, np.int64) for side in zip(*pairs))


def _pair_fast(q, v, pages, fisher, state, window: int) -> tuple[np.ndarray, np.ndarray]:
    """NWV's greedy rule (`_pair_greedy`) within each window of `window` pages of both lists:
    one float32 cost matrix per window, then the anchors' argmins over its rows/columns."""
    qs, vs = [], []
    for start in range(0, len(q), window):
        qb, vb = q[start : start + window], v[start : start + window]
        cost = _cost_matrix(pages[qb], fisher[qb], state.values[vb], state.fisher[vb], np.float32)
        cost_t = np.ascontiguousarray(cost.T)
        q_sum, v_sum = fisher[qb].sum(1), state.fisher[vb].sum(1)
        q_taken, v_taken = np.zeros(len(qb), np.float32), np.zeros(len(vb), np.float32)
        qi = vi = 0
        for _ in range(len(qb)):
            while q_taken[qi]:  # heads: the lists are sorted
                qi += 1
            while v_taken[vi]:
                vi += 1
            if q_sum[qi] >= v_sum[vi]:
                a, b = qi, int(np.argmin(cost[qi] + v_taken))
            else:
                a, b = int(np.argmin(cost_t[vi] + q_taken)), vi
            qs.append(qb[a])
            vs.append(vb[b])
            q_taken[a] = v_taken[b] = np.inf
    return np.array(qs, np.int64), np.array(vs, np.int64)


def _pair_optimal(q, v, pages, fisher, state, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum total sharing cost, solved per block of `block` pages of equal Fisher rank."""
    qs, vs = [], []
    for start in range(0, len(q), block):
        qb, vb = q[start : start + block], v[start : start + block]
        cost = _cost_matrix(pages[qb], fisher[qb], state.values[vb], state.fisher[vb])
        rows, cols = linear_sum_assignment(cost)
        qs.append(qb[rows])
        vs.append(vb[cols])
    return np.concatenate(qs), np.concatenate(vs)


def _cost_matrix(w, f, v, fv, dtype=np.float64) -> np.ndarray:
    """All pairs' costs [n_q, n_v]: (f + f')(w - v)^2 over positions where both Fishers are
    > 0, expanded into one matrix product of six features per position and side."""
    w, f, v, fv = (x.astype(dtype, copy=False) for x in (w, f, v, fv))
    mq, mv = (f > 0).astype(dtype), (fv > 0).astype(dtype)
    a, b = mq * f, mv * fv
    left = np.concatenate([a * w * w, -2 * a * w, a, mq * w * w, -2 * mq * w, mq], axis=1)
    right = np.concatenate([mv, mv * v, mv * v * v, b, b * v, b * v * v], axis=1)
    return np.maximum(left @ right.T, 0.0)
