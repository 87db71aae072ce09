"""Objectives for what a model's outputs hold: logits, probabilities or values, one output or
several. A model of several outputs trains on one tensor, its outputs flattened per sample and
joined (`TorchTwin.join_outputs`); the objective splits it again and distills each output
toward the original model's with the loss its kind wants, weighted:

- logits: KL between the softmaxes along the class axis;
- probabilities along an axis (a trailing softmax): KL between them as given (not between
  softmaxes of probabilities);
- independent probabilities (a trailing sigmoid): binary cross-entropy toward the original's;
- values (boxes, landmarks, embeddings): MSE over the original's mean square, so outputs of any
  scale weigh alike.

Class losses are averaged over positions (every axis but the class axis), so a detector's map
of scores weighs like one score. Checkpoints are selected by the worst relative error of any
output; each output's relative error (and top-1 agreement, for class outputs) is reported.

Pure torch/numpy (no TVM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .objectives import (
    CLASSIFICATION,
    DISTILL_CLASSIFIER,
    DISTILL_VALUES,
    Loss,
    Metric,
    Objective,
    objective_named,
    relative_error,
)

KINDS = ("logits", "probs", "values")
_TINY = 1e-12  # probabilities are clamped here before a log


@dataclass(frozen=True)
class OutputKind:
    """One output: `kind` ("logits", "probs" or "values"), the class `axis` of logits and
    probabilities (in the batched tensor), whether probabilities sum to one along it
    (`categorical`: a softmax's; else independent, a sigmoid's), its weight in the loss, and
    `why` the kind was chosen, for the note packing prints."""

    name: str
    shape: tuple[int, ...]  # batched, as the graph gives it
    kind: str
    axis: int = 1
    categorical: bool = True
    weight: float = 1.0
    why: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"output '{self.name}': kind {self.kind!r} is none of {', '.join(KINDS)}"
            )
        if self.has_classes and not 0 < self.axis < len(self.shape):
            raise ValueError(
                f"output '{self.name}' of shape {list(self.shape)}: class axis {self.axis} "
                "is not one of its sample axes"
            )
        if not self.weight >= 0:
            raise ValueError(f"output '{self.name}': weight {self.weight} must be >= 0")

    @property
    def size(self) -> int:
        """Values per sample."""
        return int(np.prod(self.shape[1:]))

    @property
    def has_classes(self) -> bool:
        return self.kind == "logits" or (self.kind == "probs" and self.categorical)

    def describe(self) -> str:
        """The loss this output trains with, in words."""
        if self.kind == "values":
            return "values: MSE over its mean square"
        if self.kind == "logits":
            return f"logits: KL of softmaxes along axis {self.axis}"
        if self.categorical:
            return f"probabilities along axis {self.axis}: KL"
        return "independent probabilities: binary cross-entropy"


def output_loss(output: OutputKind, mean_square: float = 1.0) -> Loss:
    """The distillation loss of `output` (outputs, the original's), batched tensors of its
    shape; `mean_square`: the original's over the training split (values only)."""
    if output.kind == "values":
        scale = max(float(mean_square), _TINY)
        return lambda y, original: F.mse_loss(y, original) / scale
    axis = output.axis
    if output.kind == "logits":
        return lambda y, original: _kl(F.log_softmax(original, axis), F.log_softmax(y, axis), axis)
    if output.categorical:
        return lambda y, original: _kl(_log(original), _log(y), axis)
    return lambda y, original: F.binary_cross_entropy(y.clamp(0, 1), original.clamp(0, 1))


def _log(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(_TINY))


def _kl(log_p: torch.Tensor, log_q: torch.Tensor, axis: int) -> torch.Tensor:
    """KL(p || q) along `axis`, averaged over every other axis."""
    return (log_p.exp() * (log_p - log_q)).sum(axis).mean()


def agreement_along(axis: int) -> Metric:
    """Percent of positions (samples x every axis but `axis`) whose top class along `axis` is
    the original's."""

    def agreement(outputs: np.ndarray, original: np.ndarray) -> float:
        same = outputs.argmax(axis) == original.reshape(outputs.shape).argmax(axis)
        return 100.0 * int(same.sum()) / same.size

    return agreement


def one_output_objective(name: str, output: OutputKind) -> Objective:
    """The built-in objective `name` for a model of one output of this kind: for logits and
    values, `objective_named`'s (unchanged); for probabilities, classification as the negative
    log-likelihood of the label's probability and distillation by the loss above (also what
    `--distill-temperature` retrains a classifier toward), selected by top-1 agreement
    (categorical) or relative error (independent)."""
    if output.kind != "probs":
        return objective_named(name, output.kind == "logits")
    if output.categorical:
        distill = Objective(
            "distill",
            output_loss(output),
            agreement_along(output.axis),
            DISTILL_CLASSIFIER.metric_name,
            percent=True,
            fisher="predicted_probability",  # one gradient a sample, not one per class
            targets="original_outputs",
            extra_metrics={"relative_error": relative_error},
        )
    else:
        distill = Objective(
            "distill",
            output_loss(output),
            relative_error,
            DISTILL_VALUES.metric_name,
            higher_is_better=False,
            fisher="outputs",
            targets="original_outputs",
        )
    if name == "classification":
        return Objective(
            "classification",
            lambda y, labels: F.nll_loss(_log(y), labels),
            CLASSIFICATION.metric,
            CLASSIFICATION.metric_name,
            percent=True,
            fisher="predicted_probability",
            toward_outputs=distill,
        )
    return distill if name == "distill" else objective_named(name, False)


def distill_outputs(outputs: list[OutputKind], mean_squares: list[float]) -> Objective:
    """Distillation of a model of several outputs, trained on their joined tensor
    [N, sum of sizes]: the weighted sum of each output's loss; checkpoints by the worst
    relative error of any output; per output its relative error (and top-1 agreement)."""
    bounds = np.cumsum([0] + [o.size for o in outputs])
    losses = [output_loss(o, m) for o, m in zip(outputs, mean_squares)]

    def parts(joined, i):
        return joined[:, bounds[i] : bounds[i + 1]].reshape(-1, *outputs[i].shape[1:])

    def loss(y: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        terms = [
            o.weight * f(parts(y, i), parts(original, i))
            for i, (o, f) in enumerate(zip(outputs, losses))
            if o.weight > 0
        ]
        return torch.stack(terms).sum()

    def per_output(i: int, metric: Metric) -> Metric:
        return lambda y, original: metric(parts(y, i), parts(original, i))

    extra = {}
    for i, o in enumerate(outputs):
        extra[f"{o.name}.relative_error"] = per_output(i, relative_error)
        if o.has_classes:
            extra[f"{o.name}.top1_agreement"] = per_output(i, agreement_along(o.axis))

    def worst_relative_error(y: np.ndarray, original: np.ndarray) -> float:
        return max(
            relative_error(parts(y, i), parts(original, i))
            for i, o in enumerate(outputs)
            if o.weight > 0
        )

    return Objective(
        "distill",
        loss,
        worst_relative_error,
        "worst_relative_error",
        higher_is_better=False,
        fisher="outputs",
        targets="original_outputs",
        extra_metrics=extra,
    )
