"""The PNG report of a pack: bytes per task, pages shared between tasks, and each task's metric
separate vs packed."""

from __future__ import annotations

import numpy as np

from ..plan import PagePlan


def shared_pages(plan: PagePlan) -> tuple[list[str], np.ndarray]:
    """Task names and the task x task matrix of pool pages that both tasks read (the diagonal:
    pool pages a task reads at all)."""
    names = list(plan.tasks)
    used = np.zeros((len(names), plan.n_pool_pages), bool)
    for i, name in enumerate(names):
        table = plan.task(name).page_table
        used[i, table[table < plan.n_pool_pages]] = True
    counts = used.astype(np.int64)
    return names, counts @ counts.T


def plot_pack(plan: PagePlan, report: dict | None, path: str) -> None:
    """Left: each task's bytes as a separate model beside its share of the pool (a pool page
    read by k tasks counts 1/k to each) and its exclusive pages. Middle: pool pages shared by
    each pair of tasks. Right (with a report): each task's test metric packed, in percent of
    the separate model's (above 100 is better for accuracy-like metrics, worse for errors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, matrix = shared_pages(plan)
    readers = np.zeros(plan.n_pool_pages)
    for name in names:
        table = plan.task(name).page_table
        np.add.at(readers, np.unique(table[table < plan.n_pool_pages]), 1)
    page_bytes = plan.pool_bytes / max(plan.n_pool_pages, 1)  # coded pages store fewer bytes
    separate, shared, exclusive = [], [], []
    for name in names:
        t = plan.task(name)
        pool_ids = np.unique(t.page_table[t.page_table < plan.n_pool_pages])
        separate.append(4 * t.layout.n_weights)
        shared.append(float(np.sum(page_bytes / readers[pool_ids])))
        exclusive.append(t.exclusive_bytes)
    fig, axes = plt.subplots(1, 3 if report else 2, figsize=(16 if report else 11, 4.2))
    at = np.arange(len(names))
    ax = axes[0]
    ax.bar(at - 0.2, separate, 0.4, label="separate model")
    ax.bar(at + 0.2, shared, 0.4, label="share of the pool")
    ax.bar(at + 0.2, exclusive, 0.4, bottom=shared, label="exclusive pages")
    ax.set_xticks(at, names, rotation=30, ha="right")
    ax.set_ylabel("bytes")
    ax.set_title(f"pool {plan.n_pool_pages} pages of {plan.page_size}")
    ax.legend(fontsize=8)
    ax = axes[1]
    image = ax.imshow(matrix, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xticks(at, names, rotation=30, ha="right")
    ax.set_yticks(at, names)
    ax.set_title("pool pages read by both tasks")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if report:
        # metrics differ in scale and direction: packed relative to separate, 100 = unchanged
        ax = axes[2]
        from ..algorithms.report import task_rows  # torch: only with a report

        rows = [task_rows(report)[n] for n in names]
        relative = [100.0 * r["packed"] / r["separate"] if r["separate"] else np.nan for r in rows]
        ax.bar(at, relative, 0.5, color=["C0" if r["higher_is_better"] else "C1" for r in rows])
        ax.axhline(100.0, color="gray", lw=0.8)
        labels = [
            f"{n}\n{r['metric']} {'(up)' if r['higher_is_better'] else '(down)'}"
            for n, r in zip(names, rows)
        ]
        ax.set_xticks(at, labels, fontsize=8)
        ax.set_ylabel("packed / separate (%)")
        low, high = np.nanmin(relative + [100.0]), np.nanmax(relative + [100.0])
        ax.set_ylim(low - 0.2 * (high - low + 1), high + 0.2 * (high - low + 1))
        ax.set_title(f"{report['ratio_bytes']:.2f}x bytes; test metric, packed vs separate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
