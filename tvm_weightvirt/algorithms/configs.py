"""The packing options as dataclasses, in a module that imports neither torch nor TVM: the
command line reads its defaults here (one source), `pipeline` and `optimize` take them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .separation import SeparationConfig


@dataclass(frozen=True)
class OptimizeConfig:
    """NWV's loss and optimizer (lambda 10, Adam 1e-3, batch 100); a CPU-sized schedule.

    With `distill_temperature`, each task fits its separate model's outputs on its training
    inputs (KL on softmaxes at that temperature for classifiers, MSE otherwise) instead of its
    training targets: on tiny training splits, labels are fitted by many functions, the
    separate model's outputs by few, and those few generalise like it does."""

    rounds: int = 4
    iterations: int = 300  # per task per round
    lam: float | None = None  # None: NWV_LAMBDA, or WS_LAMBDA with weight separation
    lr: float = 1e-3
    batch_size: int = 100
    eval_every: int = 50
    seed: int = 0
    distill_temperature: float | None = None  # None: fit the targets (NWV)

    def __post_init__(self) -> None:
        if self.distill_temperature is not None and not self.distill_temperature > 0:
            raise ValueError(
                f"distill_temperature must be > 0 (or None), got {self.distill_temperature}"
            )


@dataclass
class PackConfig:
    page_size: int = 100
    pool_pages: int | None = None  # None: pages of the largest task (NWV), or the L1 budget's
    share_within_task: bool = False  # needed for pools smaller than the largest task
    match: str = "greedy"
    init: str = "fisher_mean"
    fisher_samples: int | None = None  # None: 100 (NWV), or 50 with separation (WS)
    fisher_batch: int | None = None  # samples per batch of gradients; None: a memory bound
    fisher_split: str = "train"  # whose inputs the Fisher reads (NWV, WS: train; or "val")
    separation: SeparationConfig | None = None  # None: every page shared (NWV)
    smartdeal: bool = False  # pages stored as power-of-two codes x a 3x3 basis per page
    page_aligned: bool = False  # every weight starts on a page (zero-copy kernels)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    seed: int = 0
