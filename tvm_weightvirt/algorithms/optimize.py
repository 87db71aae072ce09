"""Weight-page optimization: Fisher-weighted joint retraining of the shared pool (NWV A.5).

Pure torch/numpy (no TVM). The pool `[S, P]` is the one trainable tensor; each task reads its
weights through its page table (a differentiable gather), so a shared page is physically one
copy, as in NWV. Tasks train in turns: each turn starts from the current pool and ends by
writing back (keeping) its best pool state by the task's metric on the **validation** split.
The loss and the metric are the task's `Objective` (NWV: cross-entropy and accuracy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..layout import PageLayout
from ..progress import steps
from .configs import OptimizeConfig
from .distributed import average_across_processes, local_share
from .matching import add_rows
from .objectives import Objective
from .training import minibatch_steps, model_outputs

NWV_LAMBDA = 10.0  # weight of the sharing loss, NWV's
WS_LAMBDA = 0.1  # with weight separation, WS's


@dataclass
class PoolTask:
    """What joint retraining needs of one task."""

    name: str
    model: torch.nn.Module  # the architecture; its own parameters are not used
    layout: PageLayout
    page_table: np.ndarray
    fisher: np.ndarray  # [n_pages, P] original-network Fisher, laid out like the weights
    anchor: np.ndarray  # [n_pages, P] the task's latest weights (initially the originals)
    train: tuple[np.ndarray, np.ndarray]  # (x, targets as the objective wants them)
    val: tuple[np.ndarray, np.ndarray]
    objective: Objective


def task_weights(pool: torch.Tensor, layout: PageLayout, page_table: torch.Tensor) -> dict:
    """The task's weights as views of a gather from the pool (NWV A.2's read, in torch)."""
    flat = pool[page_table].reshape(-1)
    return {s.name: flat[s.offset_elems : s.end_elems].view(s.shape) for s in layout.spans}


def pool_outputs(pool: np.ndarray | torch.Tensor, task: PoolTask, x: np.ndarray) -> np.ndarray:
    """The task's model outputs on `x` with its weights read from `pool`."""
    table = torch.from_numpy(task.page_table.astype(np.int64))
    with torch.no_grad():
        weights = task_weights(torch.as_tensor(pool), task.layout, table)
    return model_outputs(task.model, x, weights)


def pool_metric(
    pool: np.ndarray | torch.Tensor, task: PoolTask, x: np.ndarray, y: np.ndarray
) -> float:
    """The task's metric with its weights read from `pool`."""
    return task.objective.metric(pool_outputs(pool, task, x), y)


def sharing_loss_terms(tasks: list[PoolTask], t: int, pool_shape: tuple[int, int]):
    """NWV's matching loss for task t in pool coordinates: with c_k = F_k (v - w~_k)^2 over the
    other tasks k, `sum(mask_t * (sum_k c_k) / max(1, n_k))`, n_k = tasks k with F_k > 0 at a
    position. Returned as tensors (A, B, C, count, mask) with sum_k c_k = A v^2 - 2 B v + C."""
    a, b, c, count = (np.zeros(pool_shape) for _ in range(4))
    for k, other in enumerate(tasks):
        if k == t:
            continue
        add_rows(a, other.page_table, other.fisher)
        add_rows(b, other.page_table, other.fisher * other.anchor)
        add_rows(c, other.page_table, other.fisher * other.anchor**2)
        add_rows(count, other.page_table, (other.fisher > 0).astype(np.float64))
    mask = np.zeros(pool_shape)
    mask[tasks[t].page_table] = 1.0
    return tuple(
        torch.from_numpy(x.astype(np.float32)) for x in (a, b, c, np.maximum(count, 1), mask)
    )


def optimize_pool(
    pool: np.ndarray,
    tasks: list[PoolTask],
    config: OptimizeConfig = OptimizeConfig(),
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Joint retraining in `config.rounds` rounds of one turn per task. Returns the new pool and
    a log of each turn: task, round, validation metric before/after, whether it was kept, and
    the turn's objective (loss over the whole training split + lambda * sharing loss)
    before/after.

    With `decode`, a pool row is a page's latent form and `decode(pool)` its weights [S, P]
    (e.g. `smartdeal.decode_latent`); the loss, gather and accuracy see the decoded weights."""
    decode = decode or (lambda v: v)
    lam = NWV_LAMBDA if config.lam is None else config.lam
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    pool_t = torch.from_numpy(np.array(pool, np.float32))
    log = []
    turns = [(r, t) for r in range(config.rounds) for t in range(len(tasks))]
    for r, t in steps(turns, "retraining turns"):
        task = tasks[t]
        weights_shape = (len(pool_t), task.layout.page_size)  # what `decode(pool)` gives
        a, b, c, count, mask = sharing_loss_terms(tasks, t, weights_shape)
        v = torch.nn.Parameter(pool_t.clone())
        table = torch.from_numpy(task.page_table.astype(np.int64))
        optimizer = torch.optim.Adam([v], lr=config.lr)
        x, y = torch.from_numpy(task.train[0]), torch.from_numpy(task.train[1])

        def task_loss(weights: torch.Tensor, idx: torch.Tensor | slice) -> torch.Tensor:
            logits = torch.func.functional_call(
                task.model, task_weights(weights, task.layout, table), (x[idx],)
            )
            return task.objective.loss(logits, y[idx])

        def sharing_loss(weights: torch.Tensor) -> torch.Tensor:
            return (mask * (a * weights * weights - 2 * b * weights + c) / count).sum()

        def objective(pool: torch.Tensor, idx: torch.Tensor | slice):
            """The task's loss on the batch + lambda * NWV's sharing loss (seeds A.5)."""
            weights = decode(pool)
            return task_loss(weights, idx) + lam * sharing_loss(weights)

        def whole_split_objective(pool: torch.Tensor) -> float:
            """`objective` over the whole training split, in batches of `batch_size` (the
            loss a mean over samples: batch means weighted by batch size)."""
            with torch.no_grad():
                weights = decode(pool)
                starts = range(0, len(y), config.batch_size)
                losses = [
                    float(task_loss(weights, slice(i, i + config.batch_size))) for i in starts
                ]
                sizes = [min(config.batch_size, len(y) - i) for i in starts]
                return float(np.average(losses, weights=sizes)) + lam * float(sharing_loss(weights))

        start_objective = whole_split_objective(pool_t)
        start_val = best_val = pool_metric(decode(v.detach()), task, *task.val)
        best = None
        v.register_hook(lambda grad: grad * mask[:, :1])  # only this task's pages move
        v.register_hook(average_across_processes)  # data parallel under torchrun
        for _ in minibatch_steps(
            optimizer,
            lambda idx: objective(v, local_share(idx)),
            len(y),
            config.iterations,
            config.batch_size,
            rng,
            task.model,
            config.eval_every,
        ):
            val = pool_metric(decode(v.detach()), task, *task.val)
            if task.objective.better(val, best_val):
                best_val, best = val, v.detach().clone()
        # Write back only an improvement over the turn's start (NWV), chosen on validation.
        if best is not None:
            pool_t = best
        with torch.no_grad():
            task.anchor = decode(pool_t)[table].numpy().copy()
        end_objective = whole_split_objective(pool_t)
        log.append(
            {
                "task": task.name,
                "round": r,
                "val_before": start_val,
                "val_after": best_val,
                "kept": best is not None,
                "objective_before": start_objective,
                "objective_after": end_objective,
            }
        )
    return pool_t.numpy(), log
