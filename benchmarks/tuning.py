"""Tuning benchmark: per task inference latency with TVM's default schedules vs. MetaSchedule
tuned ones (same trials per kernel), and tuned virtualized vs. tuned plain models, one run."""

from __future__ import annotations

import tempfile
import time

import numpy as np

from benchmarks._common import run
from tvm_weightvirt.abi import task_function
from tvm_weightvirt.apps import suite
from tvm_weightvirt.compile.compiler import build, lower
from tvm_weightvirt.compile.tuning import TuningOptions
from tvm_weightvirt.compile.tuning.kernels import default_schedule
from tvm_weightvirt.plan import PagePlan

QUICK_TASKS = ["digits", "breast_cancer"]


def tuning_benchmark(quick: bool = False) -> dict:
    import tvm
    from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

    from tvm_weightvirt.compile import tuning

    trials = 4 if quick else 8
    names = QUICK_TASKS if quick else suite.FIVE_TASKS
    graphs = [t.task for t in suite.load_suite(names)]
    rng = np.random.default_rng(0)
    inputs = {t.name: [rng.normal(size=s).astype(d) for s, d in t.input_types] for t in graphs}
    plan = PagePlan.lossless(graphs)  # latency does not depend on which pages are shared
    database = tempfile.mkdtemp(prefix="wvirt-tuning-db-")
    mod = lower(graphs, plan, "materialize")
    tuned = build(mod, tuning=TuningOptions(database, trials))
    again = build(mod, tuning=TuningOptions(database, trials))  # the database serves a second build
    runtimes = {
        "default": MultitaskRuntime(plan, build(mod)),
        "tuned": MultitaskRuntime(plan, tuned),
    }
    plain = {
        "plain_default": {t.name: StandaloneModel(t) for t in graphs},
        "plain_tuned": {t.name: StandaloneModel(t, tuning_db=database) for t in graphs},
    }
    # Step 1. Each conv/dense kernel alone: default schedule vs. the database's best (the build
    # keeps the default unless the best beats it by the margin: that choice, not the best, runs).
    target = tvm.target.Target(tuned.target)
    db = tuning.open_database(database)
    kernel_speedup = {}
    for name, kernel in tuning.kernels(tuning.fuse(mod, target), target).items():
        if "conv" in name or "matmul" in name:
            best = db.query_tuning_record(kernel, target, "main").run_secs
            default = tuning.measure(default_schedule(kernel, target).mod, target)
            kernel_speedup[name] = default / float(np.mean(best))
    # Step 2. Whole tasks: through the runtimes, and the compiled functions called directly
    # (virtualized: the task function on its views of the gathered buffer; plain: the model
    # compiled alone on its own weight tensors), which leaves out Python-side call overhead.
    infer_us = {
        label: {n: [] for n in names} for label in [*runtimes, *plain, "tuned_vm", "plain_tuned_vm"]
    }
    switch_us = {label: [] for label in runtimes}
    n_runs = 50 if quick else 200
    for name in names:
        model = plain["plain_tuned"][name]
        # the direct calls bind function and arguments beforehand, alike for both: a function
        # lookup or a dict access inside the timed call costs ~2 us, 5 % of a 40 us task
        runtimes["tuned"].switch(name)
        tuned_args = [tvm.runtime.tensor(x) for x in inputs[name]]
        tuned_args += runtimes["tuned"]._arguments
        plain_args = [tvm.runtime.tensor(x) for x in inputs[name]] + list(model.weights)
        tuned_func, plain_func = runtimes["tuned"].vm[task_function(name)], model.vm["main"]
        calls = {
            **{label: (lambda r=r: r.run(name, *inputs[name])) for label, r in runtimes.items()},
            **{label: (lambda m=m[name]: m.run(*inputs[name])) for label, m in plain.items()},
            "tuned_vm": lambda: tuned_func(*tuned_args),
            "plain_tuned_vm": lambda: plain_func(*plain_args),
        }
        for call in calls.values():  # warm-up (and the tuned runtime switches to `name`)
            call()
        order = list(calls.items())
        for i in range(n_runs):  # system by system in turn: machine noise hits all alike
            # every other round backwards, so no system always runs right after another's
            # weights went through the caches
            for label, call in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                call()
                infer_us[label][name].append(1e6 * (time.perf_counter() - start))
            if i % 10 == 0:
                for label, r in runtimes.items():
                    start = time.perf_counter()
                    r.switch(name)
                    switch_us[label].append(1e6 * (time.perf_counter() - start))
    median = {
        label: {n: float(np.median(v)) for n, v in t.items()} for label, t in infer_us.items()
    }
    return {
        "tasks": names,
        "trials_per_kernel": trials,
        "trials": tuned.tuning["trials"],
        "kernels": tuned.tuning["kernels"],
        "kernels_scheduled": tuned.tuning["scheduled"],
        "kernels_kept_default": tuned.tuning["kept_default"],
        "plain_kernels_scheduled": {n: m.tuning.scheduled for n, m in plain["plain_tuned"].items()},
        "tuning_seconds": tuned.tuning["seconds"],
        "second_build_trials": again.tuning["trials"],
        "database_bytes": tuned.tuning["database_bytes"],
        "kernel_speedup_vs_default": kernel_speedup,
        "infer_us": median,
        "speedup_vs_default": {n: median["default"][n] / median["tuned"][n] for n in names},
        "plain_speedup_vs_default": {
            n: median["plain_default"][n] / median["plain_tuned"][n] for n in names
        },
        "virtualized_vs_plain_tuned": {
            n: median["tuned_vm"][n] / median["plain_tuned_vm"][n] for n in names
        },
        "virtualized_vs_plain_tuned_through_runtime": {
            n: median["tuned"][n] / median["plain_tuned"][n] for n in names
        },
        "switch_us": {label: float(np.median(v)) for label, v in switch_us.items()},
    }


def format_tuning_table(numbers: dict) -> str:
    lines = [
        f"{numbers['kernels']} unique kernels, {numbers['trials_per_kernel']} trials each at most: "
        f"{numbers['trials']} trials in {numbers['tuning_seconds']:.0f} s, database "
        f"{numbers['database_bytes']} B; a second build ran {numbers['second_build_trials']} trials",
        f"{'task':14s} {'default us':>11s} {'tuned us':>9s} {'speedup':>8s} "
        f"{'plain tuned us':>15s} {'virt/plain (VM call)':>21s}",
    ]
    us = numbers["infer_us"]
    for n in numbers["tasks"]:
        lines.append(
            f"{n:14s} {us['default'][n]:11.1f} {us['tuned'][n]:9.1f} "
            f"{numbers['speedup_vs_default'][n]:7.2f}x {us['plain_tuned'][n]:15.1f} "
            f"{numbers['virtualized_vs_plain_tuned'][n]:21.3f}"
        )
    speedups = numbers["kernel_speedup_vs_default"]
    lines.append(
        f"conv/dense kernels alone, tuned vs default: geomean "
        f"{np.exp(np.mean(np.log(list(speedups.values())))):.2f}x, min {min(speedups.values()):.2f}x"
        f", max {max(speedups.values()):.2f}x over {len(speedups)} kernels"
    )
    lines.append(
        f"switch (page gather) median: default {numbers['switch_us']['default']:.1f} us, "
        f"tuned {numbers['switch_us']['tuned']:.1f} us"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, tuning_benchmark, format_tuning_table)
