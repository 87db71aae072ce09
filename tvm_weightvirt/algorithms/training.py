"""The one training loop and the one way to read a model's outputs, for every trainer: the
suite's baselines, SmartDeal's recovery and the pool's joint retraining (pure torch/numpy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..progress import steps


def minibatch_steps(
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_samples: int,
    iterations: int,
    batch_size: int,
    rng: np.random.Generator,
    model: torch.nn.Module,
    eval_every: int,
    desc: str | None = None,
) -> Iterator[int]:
    """`iterations` optimizer steps, `model` in train mode, each on the loss of `batch_size`
    sample indices drawn without replacement by `rng` (all samples when fewer). Yields the step
    number after every `eval_every`-th step and after the last: where callers evaluate and keep
    a checkpoint. With `desc`, the steps show progress."""
    numbers = range(1, iterations + 1)
    for it in steps(numbers, desc) if desc else numbers:
        model.train()
        idx = torch.from_numpy(rng.choice(n_samples, min(batch_size, n_samples), replace=False))
        loss = batch_loss(idx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % eval_every == 0 or it == iterations:
            yield it


def model_outputs(
    model: torch.nn.Module, x: np.ndarray, weights: dict | None = None, batch_size: int = 500
) -> np.ndarray:
    """The model's outputs on `x` (eval mode, in batches), with its own weights or `weights`
    by name. Every metric is an `Objective.metric` of these."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[i : i + batch_size])
            out = (
                model(batch)
                if weights is None
                else torch.func.functional_call(model, weights, (batch,))
            )
            outputs.append(out.numpy())
    return np.concatenate(outputs)
