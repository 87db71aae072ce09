"""What a pack reports: the JSON-ready report `wv.pack` returns and the .wvpack stores, and
its table (`wvirt pack`, `wvirt inspect`)."""

from __future__ import annotations

import numpy as np

from ..coded_pages import CodedPages
from ..plan import PagePlan
from .optimize import pool_outputs
from .training import model_outputs


def pack_report(tasks, pool_tasks, plan, memory, before, costs, log, config) -> dict:
    """The JSON-ready report of a pack: per task its metric on the test split as a separate
    model, after matching and packed; bytes, ratios, the configuration and the retraining log."""
    per_task = {}
    for t, pt in zip(tasks, pool_tasks):
        test, val = t.splits["test"], t.splits["val"]
        original = model_outputs(t.model, test.x)
        packed_outputs = pool_outputs(memory, pt, test.x)
        separate = t.objective.metric(original, test.y)
        packed = t.objective.metric(packed_outputs, test.y)
        per_task[t.name] = {
            "params": pt.layout.n_weights,
            "pages": pt.layout.n_pages,
            "exclusive_pages": plan.task(t.name).n_exclusive_pages,
            "objective": t.objective.name,
            "metric": t.objective.metric_name,
            "higher_is_better": t.objective.higher_is_better,
            "percent": t.objective.percent,
            "separate": separate,
            "matched": before[t.name],
            "packed": packed,
            "delta": packed - separate,
            "validation": t.objective.metric(pool_outputs(memory, pt, val.x), val.y),
            "extra_metrics": {
                name: {"separate": f(original, test.y), "packed": f(packed_outputs, test.y)}
                for name, f in t.objective.extra_metrics.items()
            },
            "matching_cost": costs[t.name],
        }
    n_params = sum(v["params"] for v in per_task.values())
    bytes_separate = 4 * n_params
    l1_bytes = plan.pool_bytes + plan.page_table_bytes
    l2_bytes = plan.exclusive_bytes
    # percentage metrics (accuracy, top-1 agreement) summarise in pp; others stay per task
    deltas = [r["delta"] for t, r in zip(tasks, per_task.values()) if t.objective.percent]
    return {
        "page_size": plan.page_size,
        "pool_pages": plan.n_pool_pages,
        "share_within_task": config.share_within_task,
        "separation": vars(config.separation) if config.separation else None,
        "match": config.match,
        "init": config.init,
        "optimize": vars(config.optimize),
        "tasks": per_task,
        "bytes_separate": bytes_separate,
        "bytes_packed": l1_bytes + l2_bytes,
        "l1_bytes": l1_bytes,
        "l2_bytes": l2_bytes,
        "ratio_bytes": bytes_separate / (l1_bytes + l2_bytes),
        "ratio_count": n_params / memory.size,
        "mean_delta_pp": float(np.mean(deltas)) if deltas else None,
        "worst_delta_pp": float(np.min(deltas)) if deltas else None,
        "smartdeal": None if plan.coded is None else coded_report(plan),
        "optimize_log": log,
    }


def coded_report(plan: PagePlan) -> dict:
    """SmartDeal pages (pool and exclusive): real stored bytes, SmartDeal's formula (+ the page
    tables, as stored)."""
    parts = [plan.coded] + [t.coded for t in plan.tasks.values() if t.coded is not None]
    codes = np.concatenate([c.codes for c in parts])
    bases = np.concatenate([c.bases for c in parts])
    return {
        "stored_bytes": plan.pool_bytes + plan.exclusive_bytes + plan.page_table_bytes,
        "formula_bytes": CodedPages(codes, bases).formula_bytes + plan.page_table_bytes,
        "code_bits": plan.coded.format.width,
        "nonzero_fraction": float(np.count_nonzero(codes) / codes.size),
    }


def task_rows(report: dict) -> dict[str, dict]:
    """The report's per-task rows; rows of packs saved before objectives existed (accuracy
    only, `acc_*` keys) in today's form."""
    rows = {}
    for name, r in report["tasks"].items():
        if "acc_separate" in r:
            r = {k: v for k, v in r.items() if not k.startswith("acc_") and k != "delta_pp"}
            r |= {
                "objective": "classification",
                "metric": "accuracy",
                "higher_is_better": True,
                "percent": True,
                "separate": report["tasks"][name]["acc_separate"],
                "matched": report["tasks"][name]["acc_matched"],
                "packed": report["tasks"][name]["acc_packed"],
                "delta": report["tasks"][name]["delta_pp"],
            }
        rows[name] = r
    return rows


def _output_rows(row: dict) -> list[str]:
    """A line per output of a model of several (its metrics are named OUTPUT.METRIC)."""
    outputs: dict[str, list[str]] = {}
    for name, values in row.get("extra_metrics", {}).items():
        output, dot, metric = name.rpartition(".")
        if dot:
            unit = "%" if metric.endswith("agreement") else ""
            outputs.setdefault(output, []).append(
                f"{metric} {values['separate']:.4g}{unit} -> {values['packed']:.4g}{unit}"
            )
    return [f"  output {o}: {', '.join(parts)}" for o, parts in outputs.items()]


def format_report(report: dict) -> str:
    """The report as a table: per task its metric as a separate model, after matching and
    packed; then pool, bytes and the mean/worst change of the percentage metrics."""
    lines = [
        f"{'task':14s} {'params':>7s} {'pages':>5s} {'excl':>4s} {'objective':14s} {'metric':16s} "
        f"{'separate':>9s} {'matched':>9s} {'packed':>9s} {'delta':>9s}"
    ]
    for name, r in task_rows(report).items():
        unit = "%" if r["percent"] else ""
        lines.append(
            f"{name:14s} {r['params']:7d} {r['pages']:5d} {r.get('exclusive_pages', 0):4d} "
            f"{r['objective']:14s} {r['metric']:16s} {r['separate']:8.4g}{unit:1s} {r['matched']:8.4g}{unit:1s} "
            f"{r['packed']:8.4g}{unit:1s} {r['delta']:+9.3g}"
        )
        lines += _output_rows(r)
    summary = (
        f"mean delta {report['mean_delta_pp']:+.2f} pp, worst {report['worst_delta_pp']:+.2f} pp"
        if report.get("mean_delta_pp") is not None
        else "no percentage metric to summarise"
    )
    for p in report.get("refinement", []):
        losses = list(p["loss_pp"].values())
        whole = f" ({', '.join(p['whole_tasks'])} whole)" if p["whole_tasks"] else ""
        lines.append(
            f"refinement, pack {p['pack']}: {sum(p['exclusive_pages'].values())} exclusive "
            f"pages{whole}, loss worst {max(losses):.2f}, mean "
            f"{np.mean(losses):.2f} (pp){' (kept)' if p['kept'] else ''}"
        )
        if "stopped" in p:
            lines.append(f"refinement stopped: {p['stopped']}")
    lines.append(
        f"pool {report['pool_pages']} pages x {report['page_size']}; bytes separate "
        f"{report['bytes_separate']} -> packed {report['bytes_packed']} (level 1 "
        f"{report.get('l1_bytes', report['bytes_packed'])}, level 2 {report.get('l2_bytes', 0)}; {report['ratio_bytes']:.2f}x "
        f"bytes, {report['ratio_count']:.2f}x by count); {summary}"
    )
    rows = task_rows(report).values()
    if report["pool_pages"] and all(r.get("exclusive_pages", 0) == r["pages"] for r in rows):
        lines.append(
            "every page is exclusive: no task reads the pool (fewer pool pages, a smaller "
            "level-1 budget, or a smaller level-2 budget that makes tasks share, store less)"
        )
    return "\n".join(lines)
