"""A task's data for packing: train / val / test splits (arrays or torch Datasets), labels
optional, from Python or an .npz file; missing val/test splits are carved out of train.

Pure numpy/torch (no TVM). Checks against the model (shapes, label range) happen where the
model is known, in `packing`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .objectives import Objective

SPLITS = ("train", "val", "test")
NPZ_KEYS = tuple(f"{axis}_{split}" for split in SPLITS for axis in ("x", "y"))
HOLDOUT = 0.2  # of train, for each missing val/test split


@dataclass
class Split:
    x: np.ndarray  # [N, *input shape]
    y: np.ndarray | None = None  # [N] class ids, [N, ...] values, or None (no labels)

    def __len__(self) -> int:
        return len(self.x)


SplitLike = Split | tuple | np.ndarray | torch.utils.data.Dataset


@dataclass
class TaskData:
    """One task's data. A split is a `Split`, an `(x, y)` or `(x,)` tuple, an `x` array, or a
    `torch.utils.data.Dataset` of `(x, y)` pairs or of `x` alone. `objective`: "classification",
    "regression", "distill" or an `Objective`; None picks classification when there are labels,
    distill when there are none. `outputs`: what an output holds, by output name ("logits",
    "probs" or "values"; unnamed outputs as their graph says), `output_weights`: an output's
    weight in the loss of a model of several outputs (default 1)."""

    train: SplitLike
    val: SplitLike | None = None
    test: SplitLike | None = None
    objective: str | Objective | None = None
    source: str = "arrays"  # where the data came from, for messages
    outputs: dict[str, str] | None = None
    output_weights: dict[str, float] | None = None

    @staticmethod
    def from_npz(
        path: str | os.PathLike, objective: str | Objective | None = None, **options
    ) -> TaskData:
        """From an .npz with keys x_train, y_train, x_val, y_val, x_test, y_test; every y and
        the val/test splits are optional; `options`: `outputs`, `output_weights`."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"data file '{path}' does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as err:
            raise ValueError(f"data file '{path}' is not a readable .npz: {err}") from err
        check_known(f"data file '{path}'", arrays, NPZ_KEYS)
        if "x_train" not in arrays:
            raise ValueError(f"data file '{path}': no 'x_train' (has {sorted(arrays)})")
        splits = {}
        for split in SPLITS:
            if f"x_{split}" in arrays:
                splits[split] = Split(arrays[f"x_{split}"], arrays.get(f"y_{split}"))
            elif f"y_{split}" in arrays:
                raise ValueError(f"data file '{path}': 'y_{split}' without 'x_{split}'")
        return TaskData(**splits, objective=objective, source=path, **options)

    def resolve(self, task: str, seed: int = 0) -> tuple[dict[str, Split], list[str]]:
        """Every split as arrays, the missing ones carved out of train (seeded, stratified by
        label where there are class labels); also what was carved, in words."""
        given = {s: _as_split(getattr(self, s), task, s, self.source) for s in SPLITS}
        given = {s: split for s, split in given.items() if split is not None}
        if "train" not in given:
            raise ValueError(f"task '{task}': no training data in {self.source}")
        labelled = [given[s].y is not None for s in given]
        if any(labelled) and not all(labelled):
            raise ValueError(
                f"task '{task}': {self.source} labels some splits and not others "
                f"({', '.join(f'{s}: {given[s].y is not None}' for s in given)})"
            )
        notes = []
        for split in SPLITS[1:]:
            if split in given:
                continue
            try:
                given["train"], given[split], stratified = _carve(given["train"], HOLDOUT, seed)
            except ValueError as err:
                raise ValueError(
                    f"task '{task}': {self.source} has no {split} split: {err}"
                ) from err
            notes.append(
                f"{split}: {len(given[split])} samples held out of train ({HOLDOUT:.0%}, "
                f"seed {seed}{', stratified' if stratified else ''})"
            )
        return {s: given[s] for s in SPLITS}, notes


def _as_split(value: SplitLike | None, task: str, split: str, source: str) -> Split | None:
    where = f"task '{task}': {split} split of {source}"
    if value is None:
        return None
    if isinstance(value, Split):
        x, y = value.x, value.y
    elif isinstance(value, torch.utils.data.Dataset):
        x, y = _from_dataset(value, where)
    elif isinstance(value, tuple) and 1 <= len(value) <= 2:
        x, y = value[0], value[1] if len(value) == 2 else None
    elif isinstance(value, np.ndarray | torch.Tensor):
        x, y = value, None
    else:
        raise ValueError(
            f"{where}: expected arrays (x, y), (x,), x, a Split or a torch Dataset, "
            f"got {type(value).__name__}"
        )
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.numpy() if isinstance(y, torch.Tensor) else (None if y is None else np.asarray(y))
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{where}: x holds no samples (shape {x.shape})")
    if y is not None and len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} samples in x but {len(y)} in y")
    for axis, values in (("x", x), ("y", y)):
        if values is not None and values.dtype.kind not in "biuf":
            raise ValueError(f"{where}: {axis} has dtype {values.dtype}, expected numbers")
        if values is not None and values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).reshape(len(values), -1).any(1).sum())
            raise ValueError(f"{where}: {axis} holds NaN or inf in {bad} samples")
    return Split(x, y)


def _from_dataset(dataset: torch.utils.data.Dataset, where: str) -> tuple:
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise ValueError(f"{where}: the Dataset is empty")
    pairs = all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items)
    xs = [i[0] if pairs else i for i in items]
    x = np.stack([np.asarray(v) for v in xs])
    y = np.stack([np.asarray(i[1]) for i in items]) if pairs else None
    return x, y


def _stratify(y: np.ndarray | None) -> bool:
    """Stratify on integer class labels when every class has at least two samples."""
    if y is None or y.ndim != 1 or y.dtype.kind not in "biu":
        return False
    return bool(np.unique(y, return_counts=True)[1].min() >= 2)


def _carve(train: Split, fraction: float, seed: int) -> tuple[Split, Split, bool]:
    """`fraction` of `train` held out (at least one sample), and whether by stratifying."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(train))
    n_out = max(1, round(fraction * len(train)))
    if len(train) - n_out < 1:
        raise ValueError(f"{len(train)} training samples are too few to hold one out")
    stratify = train.y if _stratify(train.y) and n_out >= len(np.unique(train.y)) else None
    keep, out = train_test_split(index, test_size=n_out, random_state=seed, stratify=stratify)
    keep, out = np.sort(keep), np.sort(out)

    def take(ids):
        return Split(train.x[ids], None if train.y is None else train.y[ids])

    return take(keep), take(out), stratify is not None


def check_known(where: str, found, valid, what: str = "keys") -> None:
    """Refuse names in `found` that are not in `valid`, naming them all and the valid ones."""
    unknown = sorted(set(found) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown {what} {unknown} (valid: {', '.join(valid)})")
