"""Weight importance: diagonal Fisher information as NWV and WS define it.

Pure torch/numpy (no TVM). Results are dicts `{parameter name: array of its shape}` that
`PageLayout.flatten` turns into a per-page Fisher vector.
"""

from __future__ import annotations

import numpy as np
import torch


def fisher_nwv(
    model: torch.nn.Module,
    x: np.ndarray,
    n_samples: int = 100,
    seed: int = 0,
    likelihood: str = "predicted_class",
) -> dict[str, np.ndarray]:
    """NWV's diagonal Fisher (seeds A.3): over `n_samples` random samples of `x`, one at a time,
    `F_i = 1/S * sum_x p(y^|x) * (d log p(y^|x) / d theta_i)^2` with y^ the predicted class
    (no labels needed). With `likelihood="outputs"` (regression, a Gaussian likelihood of unit
    variance), the Fisher of one sample is `sum_k (d f_k(x) / d theta_i)^2` over its outputs.
    Covers `model.named_parameters()`; buffers get none (see `fill_missing`)."""
    model.eval()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), min(n_samples, len(x)), replace=False)
    params = dict(model.named_parameters())
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    for i in picks:
        out = model(torch.from_numpy(x[i : i + 1]))
        if likelihood == "predicted_class":
            log_p = torch.log_softmax(out, dim=1)[0]
            predicted = int(log_p.argmax())
            terms = [(log_p[predicted], float(log_p[predicted].detach().exp()))]
        else:
            flat = out.reshape(-1)
            terms = [(flat[k], 1.0) for k in range(len(flat))]
        for value, weight in terms:
            grads = torch.autograd.grad(value, list(params.values()), retain_graph=True)
            for name, g in zip(params, grads):
                fisher[name] += weight * g.detach() ** 2
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
