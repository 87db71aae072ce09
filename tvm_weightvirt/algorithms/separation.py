"""Weight separation (WS seeds B.3): which pages of a task stay exclusive (level-2 storage)
and which go to the shared pool (level-1 memory), under byte budgets.

Pure numpy (no TVM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class SeparationConfig:
    """WS's defaults: tpr 1.0, margin 0.1 (exclusive pages cover ~90 % of the Fisher mass).
    With `target_accuracy` (a fraction), each task's tpr comes from WS's target-accuracy rule
    (`tpr_for_target_accuracy`) on its training split instead."""

    tpr: float = 1.0
    margin: float = 0.1
    l1_budget_bytes: int | None = None  # shared pool + page tables (int32) in RAM
    l2_budget_bytes: int | None = None  # all exclusive pages in flash / eMMC / a file
    target_accuracy: float | None = None


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


def shared_pages_for_budget(l1_budget_bytes: int, page_size: int, n_table_entries: int) -> int:
    """Pool pages that fit in a level-1 budget next to the int32 page tables."""
    table_bytes = 4 * n_table_entries
    pages = (l1_budget_bytes - table_bytes) // (4 * page_size)
    if pages < 1:
        minimum = table_bytes + 4 * page_size
        raise ValueError(
            f"level-1 budget of {l1_budget_bytes} B cannot hold the page tables ({table_bytes} B) "
            f"and one pool page ({4 * page_size} B): the minimum is {minimum} B"
        )
    return int(pages)
