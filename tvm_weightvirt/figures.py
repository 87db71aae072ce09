"""The PNG report of a pack: sharing per pool page and accuracy per task."""

from __future__ import annotations

import numpy as np

from .plan import PagePlan


def plot_pack(plan: PagePlan, report: dict | None, path: str) -> None:
    """Left: how many task pages each pool page holds. Right (with a report): test accuracy of
    each task as a separate model and through the packed pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    occupancy = np.zeros(plan.n_pool_pages, np.int64)
    for t in plan.tasks.values():
        np.add.at(occupancy, t.page_table[t.page_table < plan.n_pool_pages], 1)
    fig, axes = plt.subplots(1, 2 if report else 1, figsize=(11 if report else 5.5, 4))
    axes = np.atleast_1d(axes)
    counts = np.bincount(occupancy)
    axes[0].bar(np.arange(len(counts)), counts)
    axes[0].set_xlabel("task pages on a pool page")
    axes[0].set_ylabel("pool pages")
    axes[0].set_title(f"sharing: {plan.n_pool_pages} pool pages of {plan.page_size}")
    if report:
        names = list(report["tasks"])
        at = np.arange(len(names))
        separate = [report["tasks"][n]["separate"] for n in names]
        packed = [report["tasks"][n]["packed"] for n in names]
        axes[1].bar(at - 0.2, separate, 0.4, label="separate")
        axes[1].bar(at + 0.2, packed, 0.4, label="packed")
        axes[1].set_xticks(at, names, rotation=30, ha="right")
        axes[1].set_ylabel("test accuracy (%)")
        axes[1].set_title(
            f"{report['ratio_bytes']:.2f}x bytes, mean {report['mean_delta_pp']:+.2f} pp"
        )
        axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
