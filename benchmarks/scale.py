"""Packing at real size: matching speed on 10^3..10^6 pages per level, ten ImageNet-class nets
matched, Fisher and packing time of model-zoo graphs, peak memory, and switching at size."""

from __future__ import annotations

import resource
import tempfile
import time

import numpy as np

from benchmarks._common import run
from tvm_weightvirt.algorithms.matching import METHODS, PoolState, match_task
from tvm_weightvirt.apps import examples
from tvm_weightvirt.progress import log

PAGE_SIZE = 100
GROWTH = {"greedy": 2, "fast": 1, "optimal": 1, "random": 1}  # time ~ n^k per level
# ten nets of >= 250 M weights: the nine zoo graphs and a second ResNet-50 (another seed)
TEN_NETS = [(g, 0) for g in examples.ZOO_GRAPHS] + [("resnet50", 1)]
QUICK_NETS = [("squeezenet", 0), ("shufflenet", 0), ("inception_v1", 0), ("densenet121", 0)]


def _scale_case(n_pages: int, seed: int = 0):
    """One task of n pages onto a pool of n pages that all hold one earlier task: every page
    is at occupancy level 1, so the whole task is one level (the hardest case)."""
    rng = np.random.default_rng(seed)
    state = PoolState.empty(n_pages, PAGE_SIZE, init="weights", seed=seed)
    state.values[:] = rng.normal(0, 0.1, state.values.shape)
    state.fisher[:] = rng.exponential(1e-3, state.fisher.shape)
    state.occupancy[:] = 1
    pages = rng.normal(0, 0.1, (n_pages, PAGE_SIZE)).astype(np.float32)
    fisher = rng.exponential(1e-3, (n_pages, PAGE_SIZE)).astype(np.float32)
    return state, pages, fisher


def matching_speed(sizes: list[int], time_cap: float) -> tuple[dict, dict]:
    """Pages per minute and total sharing cost of each method on one level of n pages,
    skipping sizes projected past `time_cap` seconds."""
    speed, cost = {m: {} for m in METHODS}, {m: {} for m in METHODS}
    for method in METHODS:
        last = None
        for n in sizes:
            if last is not None:
                projected = last[1] * (n / last[0]) ** GROWTH[method]
                if projected > time_cap:
                    log.info("%s, %d pages: skipped (projected %.0f s)", method, n, projected)
                    continue
            state, pages, fisher = _scale_case(n)
            start = time.perf_counter()
            match = match_task(state, pages, fisher, method)
            seconds = time.perf_counter() - start
            last = (n, seconds)
            speed[method][str(n)] = 60 * n / seconds
            cost[method][str(n)] = match.cost
            log.info(
                "%s, %d pages: %.2f s, %.0f pages/minute", method, n, seconds, 60 * n / seconds
            )
    return speed, cost


def ten_nets(nets: list[tuple[str, int]], method: str = "fast") -> dict:
    """The nets' real layouts and (seeded) weights, a synthetic Fisher (exponential; matching
    cost depends on the arrays only), matched one after another onto NWV's pool (the largest
    net's pages)."""
    from tvm_weightvirt.layout import PageLayout

    pages, fishers, weights = [], [], 0
    rng = np.random.default_rng(0)
    for graph, seed in nets:
        task = examples.zoo_task(graph, seed, name=f"{graph}_{seed}")
        layout = PageLayout.from_weights(
            {k: (w.shape, str(w.dtype)) for k, w in task.weights.items()}, PAGE_SIZE, task.name
        )
        pages.append(layout.to_pages(task.weights))
        fishers.append(rng.exponential(1e-3, pages[-1].shape).astype(np.float32))
        weights += task.n_weights
        del task
    state = PoolState.empty(max(len(p) for p in pages), PAGE_SIZE, init="weights")
    start = time.perf_counter()
    for (graph, seed), task_pages, fisher in zip(nets, pages, fishers):
        match = match_task(state, task_pages, fisher, method, task=graph)
        state.add(match.page_table, task_pages, fisher)
        log.info(
            "matched %s (%d pages), %.0f s", graph, len(task_pages), time.perf_counter() - start
        )
    return {
        "nets": [f"{g}_{s}" for g, s in nets],
        "weights": weights,
        "pages": int(sum(len(p) for p in pages)),
        "seconds_to_match": time.perf_counter() - start,
        "method": method,
    }


def zoo_pack(graphs: list[str], fisher_samples: int) -> tuple[dict, dict, object, list]:
    """Fisher alone per graph, then the whole pack (Fisher -> fast matching -> a short
    retraining) of the graphs together on random inputs (distilled): seconds of each."""
    from tvm_weightvirt.algorithms.data import TaskData
    from tvm_weightvirt.algorithms.importance import fisher_nwv
    from tvm_weightvirt.algorithms.optimize import OptimizeConfig
    from tvm_weightvirt.algorithms.pipeline import PackConfig
    from tvm_weightvirt.frontend.packing import pack
    from tvm_weightvirt.frontend.twin import TorchTwin

    tasks = [examples.zoo_task(g) for g in graphs]
    rng = np.random.default_rng(0)
    data = {}
    for t in tasks:
        shape = t.input_types[0][0][1:]
        data[t.name] = TaskData(
            *(rng.normal(size=(n, *shape)).astype(np.float32) for n in (fisher_samples, 4, 4))
        )
    fisher_seconds = {}
    for t in tasks:
        start = time.perf_counter()
        fisher_nwv(TorchTwin(t), data[t.name].train, fisher_samples)
        fisher_seconds[t.name] = time.perf_counter() - start
        log.info("fisher %s: %.1f s", t.name, fisher_seconds[t.name])
    config = PackConfig(
        match="fast",
        fisher_samples=fisher_samples,
        optimize=OptimizeConfig(rounds=1, iterations=2, batch_size=4, eval_every=2),
    )
    start = time.perf_counter()
    plan = pack(tasks, data, config).plan
    seconds = time.perf_counter() - start
    log.info("packed %s: %.1f s", graphs, seconds)
    return fisher_seconds, {"+".join(graphs): seconds}, plan, tasks


def switch_at_size(plan, tasks: list, quick: bool) -> tuple[dict, dict]:
    """The switch benchmark's measurement on the packed zoo graphs: materialize switch / memcpy
    of the task's bytes, reload-from-storage / switch, inference virtualized / plain."""
    import tvm
    from tvm_weightvirt.runtime import MultitaskRuntime, ReloadModels, ResidentModels

    from tvm_weightvirt.apps.bench import measure_switches
    from tvm_weightvirt.compile.compiler import build, lower

    systems = {
        "materialize": MultitaskRuntime(plan, build(lower(tasks, plan, "materialize"))),
        "reload": ReloadModels.compile(tasks, tempfile.mkdtemp(prefix="wvirt-reload-"), cold=True),
        "resident": ResidentModels.compile(tasks),
    }
    rng = np.random.default_rng(0)
    inputs = {t.name: rng.normal(size=t.input_types[0][0]).astype(np.float32) for t in tasks}
    numbers = measure_switches(systems, plan, inputs, tvm.cpu(), 20 if quick else 60, seed=0)
    per_task = numbers["per_task"]
    switch = {
        name: {
            "bytes": plan.task(name).layout.n_pages * plan.page_size * 4,
            "switch_vs_memcpy": per_task["materialize"][name]["switch_vs_memcpy"],
            "reload_vs_switch": per_task["reload"][name]["switch_us"]
            / per_task["materialize"][name]["switch_us"],
        }
        for name in inputs
    }
    infer = {
        name: per_task["materialize"][name]["infer_us"] / per_task["resident"][name]["infer_us"]
        for name in inputs
    }
    return switch, infer


def ddp(processes: int = 2) -> dict:
    """`wvirt pack` of the example user models (examples.write_user_models) in one process and
    in `processes` (torchrun, gloo on loopback): seconds of each, and whether the plans agree
    (equal page tables, pool weights within 1e-4 of the largest)."""
    import os
    import subprocess
    import sys

    from tvm_weightvirt.frontend.artifact import load_wvpack

    folder = tempfile.mkdtemp(prefix="wvirt-ddp-")
    examples.write_user_models(folder)
    manifest = os.path.join(folder, "suite.toml")
    seconds, plans = {}, {}
    for n in (1, processes):
        out = os.path.join(folder, f"{n}.wvpack")
        command = [sys.executable, "-m", "tvm_weightvirt.apps.cli", "pack", manifest, "-o", out]
        start = time.perf_counter()
        subprocess.run([*command, "--nproc", str(n)], check=True, capture_output=True)
        seconds[n] = time.perf_counter() - start
        plans[n] = load_wvpack(out).plan
    one, many = plans[1], plans[processes]
    difference = float(np.abs(one.pool - many.pool).max())
    same_tables = all(
        np.array_equal(one.task(t).page_table, many.task(t).page_table) for t in one.tasks
    )
    return {
        "processes": processes,
        "seconds": seconds[processes],
        "seconds_one_process": seconds[1],
        "max_pool_difference": difference,
        "same_plan": bool(same_tables and difference <= 1e-4 * np.abs(one.pool).max()),
    }


def measure(quick: bool) -> dict:
    sizes = [1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    speed, cost = matching_speed(sizes, 60.0 if quick else 600.0)
    cost_vs_greedy = {
        m: {n: c / cost["greedy"][n] for n, c in by_n.items() if n in cost["greedy"]}
        for m, by_n in cost.items()
    }
    nets = ten_nets(QUICK_NETS if quick else TEN_NETS)
    graphs = ["squeezenet", "shufflenet"] if quick else ["squeezenet", "inception_v1", "resnet50"]
    fisher_seconds, pack_seconds, plan, tasks = zoo_pack(graphs, 10 if quick else 50)
    switch, infer = switch_at_size(plan, tasks, quick)
    return {
        "matching": speed,
        "matching_cost": cost,
        "matching_cost_vs_greedy": cost_vs_greedy,
        "ten_nets": nets,
        "fisher_seconds": fisher_seconds,
        "pack_seconds": pack_seconds,
        "switch": switch,
        "infer_ratio": infer,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "ddp": ddp(),
    }


def table(numbers: dict) -> str:
    lines = ["pages per minute (one level; cost / greedy's where greedy ran):"]
    for method, by_n in numbers["matching"].items():
        cells = [
            f"{n}: {ppm:,.0f}"
            + (
                f" ({numbers['matching_cost_vs_greedy'][method][n]:.3f})"
                if n in numbers["matching_cost_vs_greedy"][method]
                else ""
            )
            for n, ppm in by_n.items()
        ]
        lines.append(f"  {method:8s} " + ", ".join(cells))
    t = numbers["ten_nets"]
    lines.append(
        f"{len(t['nets'])} nets, {t['weights']:,} weights ({t['pages']:,} pages) matched by "
        f"{t['method']} in {t['seconds_to_match']:.0f} s"
    )
    lines.append(f"fisher seconds: {numbers['fisher_seconds']}")
    lines.append(f"pack seconds: {numbers['pack_seconds']}")
    for name, s in numbers["switch"].items():
        lines.append(
            f"  {name}: {s['bytes'] / 1e6:.1f} MB, switch / memcpy {s['switch_vs_memcpy']:.2f}, "
            f"reload / switch {s['reload_vs_switch']:.1f}, inference virtualized / plain "
            f"{numbers['infer_ratio'][name]:.3f}"
        )
    lines.append(f"peak RSS {numbers['peak_rss_bytes'] / 2**30:.2f} GiB")
    d = numbers["ddp"]
    lines.append(
        f"retraining in {d['processes']} processes: {d['seconds']:.1f} s (1 process "
        f"{d['seconds_one_process']:.1f} s), same plan: {d['same_plan']} (pool difference "
        f"{d['max_pool_difference']:.1e})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, table)
