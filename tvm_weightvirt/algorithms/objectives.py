"""What packing optimizes and reports for a task: the training loss, the metric that selects
and reports, and the likelihood NWV's Fisher differentiates. Built in: classification,
regression and distill (label-free: the original model's outputs are the targets).

Pure torch/numpy (no TVM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> scalar
Metric = Callable[[np.ndarray, np.ndarray], float]  # (outputs, targets) -> a number


@dataclass(frozen=True)
class Objective:
    """`loss` trains, `metric` selects checkpoints (on validation) and reports (on test);
    `fisher` names the log-likelihood of NWV's Fisher: "predicted_class" (log p of the
    model's own top class, weighted by p: NWV A.3, no labels needed), "predicted_probability"
    (the same for outputs that are probabilities already) or "outputs" (a Gaussian
    likelihood: the squared gradients of every output, summed). `targets` says what `y` is:
    "labels" (class ids), "values" (float outputs) or "original_outputs" (distill: filled in
    from the original model)."""

    name: str
    loss: Loss
    metric: Metric
    metric_name: str
    higher_is_better: bool = True
    percent: bool = False  # the metric is a percentage (summaries average these in pp)
    fisher: str = "predicted_class"
    targets: str = "labels"
    extra_metrics: dict[str, Metric] = field(default_factory=dict)  # reported, never selected on
    # the objective toward the original model's outputs, where the generic one does not fit
    # (classification of a softmax output: KL between the probabilities, not their softmaxes)
    toward_outputs: Objective | None = None

    def __post_init__(self) -> None:
        if self.fisher not in ("predicted_class", "predicted_probability", "outputs"):
            raise ValueError(
                f"objective '{self.name}': fisher must be 'predicted_class', "
                "'predicted_probability' or 'outputs', "
                f"got {self.fisher!r}"
            )
        if self.targets not in ("labels", "values", "original_outputs"):
            raise ValueError(
                f"objective '{self.name}': targets must be 'labels', 'values' or "
                f"'original_outputs', got {self.targets!r}"
            )

    def better(self, a: float, b: float) -> bool:
        """Whether metric value `a` is strictly better than `b`."""
        return a > b if self.higher_is_better else a < b


# **** metrics ****


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Percent of samples whose top output is the label (100 * correct / n, as people count)."""
    return 100.0 * int(np.sum(outputs.argmax(1) == labels)) / len(labels)


def agreement(outputs: np.ndarray, original: np.ndarray) -> float:
    """Percent of samples whose top class is the original model's top class."""
    return 100.0 * int(np.sum(outputs.argmax(1) == original.argmax(1))) / len(original)


def rmse(outputs: np.ndarray, values: np.ndarray) -> float:
    return float(np.sqrt(np.mean((outputs - values.reshape(outputs.shape)) ** 2)))


def r2(outputs: np.ndarray, values: np.ndarray) -> float:
    """Coefficient of determination over all outputs."""
    values = values.reshape(outputs.shape)
    total = float(np.sum((values - values.mean(0)) ** 2))
    return 1.0 - float(np.sum((outputs - values) ** 2)) / total if total > 0 else float("nan")


def relative_error(outputs: np.ndarray, original: np.ndarray) -> float:
    """||outputs - original|| / ||original|| over the whole split."""
    scale = float(np.linalg.norm(original))
    return float(np.linalg.norm(outputs - original)) / (scale if scale > 0 else 1.0)


# **** losses ****


def _mse(outputs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs, values.reshape(outputs.shape))


def _kl_on_softmax(outputs: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """KL(softmax(original) || softmax(outputs)), the distillation loss for classifiers."""
    return F.kl_div(
        F.log_softmax(outputs, 1),
        F.log_softmax(original, 1),
        log_target=True,
        reduction="batchmean",
    )


def _kl_on_softmax_at(temperature: float) -> Loss:
    """Hinton et al.'s distillation loss at `temperature`: KL between the softened softmaxes,
    times temperature^2 (so its gradients keep their scale as the temperature changes)."""

    def loss(outputs: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return _kl_on_softmax(outputs / temperature, original / temperature) * temperature**2

    return loss


CLASSIFICATION = Objective("classification", F.cross_entropy, accuracy, "accuracy", percent=True)
REGRESSION = Objective(
    "regression",
    _mse,
    rmse,
    "rmse",
    higher_is_better=False,
    fisher="outputs",
    targets="values",
    extra_metrics={"r2": r2},
)
DISTILL_CLASSIFIER = Objective(
    "distill",
    _kl_on_softmax,
    agreement,
    "top1_agreement",
    percent=True,
    targets="original_outputs",
)
DISTILL_VALUES = Objective(
    "distill",
    _mse,
    relative_error,
    "relative_error",
    higher_is_better=False,
    fisher="outputs",
    targets="original_outputs",
)
NAMES = ("classification", "regression", "distill")


def toward_original_outputs(objective: Objective, temperature: float) -> Objective:
    """The objective that trains a model toward the original model's outputs instead of
    `objective`'s targets, and selects checkpoints by how closely it still agrees with them:
    for a classifier (targets "labels"), KL on softmaxes at `temperature` and top-1 agreement;
    otherwise MSE and relative error. A distill objective already is one."""
    if objective.targets == "original_outputs":
        return objective
    if objective.toward_outputs is not None:
        return objective.toward_outputs
    if objective.targets == "labels":
        return replace(DISTILL_CLASSIFIER, loss=_kl_on_softmax_at(temperature))
    return DISTILL_VALUES


def objective_named(name: str, classifier: bool) -> Objective:
    """A built-in objective; `classifier` (outputs [N, C >= 2], or [N, C, 1, ...]) picks distill's form: KL and
    top-1 agreement for classifiers, MSE and relative error otherwise."""
    if name == "classification":
        return CLASSIFICATION
    if name == "regression":
        return REGRESSION
    if name == "distill":
        return DISTILL_CLASSIFIER if classifier else DISTILL_VALUES
    raise ValueError(f"unknown objective {name!r} (built in: {', '.join(NAMES)})")
