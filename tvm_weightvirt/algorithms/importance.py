"""Weight importance: diagonal Fisher information as NWV and WS define it.

Pure torch/numpy (no TVM). Results are dicts `{parameter name: array of its shape}` that
`PageLayout.flatten` turns into a per-page Fisher vector.
"""

from __future__ import annotations

import numpy as np
import torch

from ..progress import steps

FISHER_BATCH_BYTES = 256 * 2**20  # default bound on the per-sample gradients held at once


def fisher_nwv(
    model: torch.nn.Module,
    x: np.ndarray,
    n_samples: int = 100,
    seed: int = 0,
    likelihood: str = "predicted_class",
    batch_size: int | None = None,
    desc: str | None = None,
) -> dict[str, np.ndarray]:
    """NWV's diagonal Fisher (seeds A.3): over `n_samples` random samples of `x`,
    `F_i = 1/S * sum_x p(y^|x) * (d log p(y^|x) / d theta_i)^2` with y^ the predicted class
    (no labels needed); `likelihood="predicted_probability"` is the same for a model whose
    outputs are probabilities already (log p, not log softmax). With `likelihood="outputs"` (regression, a Gaussian likelihood of unit
    variance), the Fisher of one sample is `sum_k (d f_k(x) / d theta_i)^2` over its outputs.
    Covers `model.named_parameters()`; buffers get none (see `fill_missing`).

    Per-sample gradients are computed `batch_size` samples at a time (`torch.func.vmap` of
    `grad`), the same values as one sample at a time up to float rounding; None sizes the
    batches so their gradients stay under `FISHER_BATCH_BYTES`. The model's parameter dtype
    is the compute dtype (`x` is cast to it); the sum is accumulated in float64. With `desc`,
    a loop of more than one batch shows progress."""
    model.eval()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), min(n_samples, len(x)), replace=False)
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    dtype = next(iter(params.values())).dtype if params else torch.float32

    def outputs(p: dict, sample: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, (p, buffers), (sample[None],))[0]

    if likelihood in ("predicted_class", "predicted_probability"):

        def log_p_predicted(p, sample):
            out = outputs(p, sample).reshape(-1)
            if likelihood == "predicted_class":
                log_p = torch.log_softmax(out, 0)
            else:  # the outputs are probabilities already (a softmax ends the model)
                log_p = torch.log(out.clamp_min(1e-12))
            return log_p.max(), log_p.max().detach().exp()

        def sample_fisher(p, sample):
            grads, weight = torch.func.grad(log_p_predicted, has_aux=True)(p, sample)
            return {name: weight * g**2 for name, g in grads.items()}

        per_sample = sum(p.numel() for p in params.values())
    else:
        with torch.no_grad():
            n_out = outputs(params, torch.from_numpy(x[picks[0]]).to(dtype)).numel()
        per_output = sum(p.numel() for p in params.values()) * dtype.itemsize
        # the Jacobian of one sample in chunks of outputs that fit the bound
        chunk = (
            max(1, FISHER_BATCH_BYTES // per_output)
            if n_out * per_output > FISHER_BATCH_BYTES
            else None
        )

        def sample_fisher(p, sample):
            flat = lambda q: outputs(q, sample).reshape(-1)  # noqa: E731
            jacobian = torch.func.jacrev(flat, chunk_size=chunk)(p)
            return {name: (j**2).sum(0) for name, j in jacobian.items()}

        per_sample = n_out * sum(p.numel() for p in params.values())
    if batch_size is None:
        batch_size = max(1, FISHER_BATCH_BYTES // max(1, per_sample * dtype.itemsize))
    batched = torch.func.vmap(sample_fisher, in_dims=(None, 0))
    fisher = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    starts = range(0, len(picks), batch_size)
    for start in steps(starts, desc) if desc and len(starts) > 1 else starts:
        batch = torch.from_numpy(x[picks[start : start + batch_size]]).to(dtype)
        for name, f in batched(params, batch).items():
            fisher[name] += f.sum(0, dtype=torch.float64)
    return {name: (f / len(picks)).numpy().astype(np.float32) for name, f in fisher.items()}


def fisher_ws(model: torch.nn.Module, x: np.ndarray, n_samples: int = 50, **options) -> dict:
    """WS's variant (seeds B.2): NWV's formula (`fisher_nwv`, same options) over 50 samples,
    min-max normalised to [0, 1] over the whole network."""
    return _min_max(fisher_nwv(model, x, n_samples, **options))


def fill_missing(
    fisher: dict[str, np.ndarray], weights: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Importance for every weight of a layout: weights without a Fisher (buffers such as
    batch-norm statistics, which have no gradient) get the task's largest Fisher value, so
    matching treats them as critical rather than free to share."""
    top = max((float(f.max()) for f in fisher.values() if f.size), default=1.0)
    return {
        name: fisher[name] if name in fisher else np.full(w.shape, top, np.float32)
        for name, w in weights.items()
    }


def _min_max(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    flat = np.concatenate([v.reshape(-1) for v in values.values()])
    low, high = float(flat.min()), float(flat.max())
    scale = high - low if high > low else 1.0
    return {name: ((v - low) / scale).astype(np.float32) for name, v in values.items()}
