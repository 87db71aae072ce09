"""End-to-end demo: pack the 5-task suite into one pool, build it with TVM, switch between
tasks in memory, and check the compiled accuracy against torch."""

from __future__ import annotations

import os
import time

import numpy as np

from ..algorithms.optimize import OptimizeConfig
from ..algorithms.pipeline import PackConfig
from ..algorithms.report import format_report
from ..compile.compiler import build, lower
from ..frontend.artifact import load_wvpack, save_wvpack
from ..frontend.packing import pack
from . import suite


def run_demo(
    out_dir: str = "out/demo",
    rounds: int = 3,
    iterations: int = 200,
    requests: int = 30,
    seed: int = 0,
) -> dict:
    from tvm_weightvirt.runtime import MultitaskRuntime

    os.makedirs(out_dir, exist_ok=True)
    # Step 1. The suite: real data, baselines trained once and cached.
    tasks = suite.load_suite(suite.FIVE_TASKS)
    # Step 2. Fisher -> matching -> retraining, at NWV's pool size (pages of the largest task).
    result = pack(
        *suite.packable(tasks),
        PackConfig(optimize=OptimizeConfig(rounds=rounds, iterations=iterations)),
    )
    print(format_report(result.report))
    real = suite.mnist_real_test(next(t for t in tasks if t.name == "mnist"), result.plan)
    if real is not None:
        result.report["mnist_real_test"] = real
        print(
            "real MNIST test set (10,000 images): separate {acc_separate:.2f}%, packed "
            "{acc_packed:.2f}%".format(**real)
        )
    # Step 3. The artifact, with each task's graph.
    graphs = [t.task for t in tasks]
    path = os.path.join(out_dir, "suite.wvpack")
    size = save_wvpack(path, result.plan, graphs, result.report)
    loaded = load_wvpack(path)
    print(f"wrote {path} ({size} B)")
    # Step 4. Build once for llvm; every task's compiled test accuracy equals torch's.
    library = build(lower(loaded.tasks, loaded.plan, mode="materialize"), target="llvm")
    print(f"built {len(loaded.tasks)} tasks in one module in {library.compile_seconds:.1f} s")
    runtime = MultitaskRuntime(loaded.plan, library)
    for t in tasks:
        test = t.splits["test"]
        predicted = [
            int(runtime.run(t.name, test.x[i : i + 1])[0].argmax()) for i in range(len(test.y))
        ]
        compiled = 100.0 * int((np.array(predicted) == test.y).sum()) / len(test.y)
        expected = result.report["tasks"][t.name]["packed"]
        print(f"  {t.name:14s} compiled {compiled:6.2f}%  torch {expected:6.2f}%")
        assert compiled == expected, f"task '{t.name}': compiled {compiled} != torch {expected}"
    # Step 5. A random request sequence, switching in memory.
    rng = np.random.default_rng(seed)
    switch_ms, run_ms = [], []
    for name in rng.choice([t.name for t in tasks], requests):
        x = next(t for t in tasks if t.name == name).example_input().numpy()
        start = time.perf_counter()
        runtime.switch(name)
        switched = time.perf_counter()
        runtime.run(name, x)
        switch_ms.append(1e3 * (switched - start))
        run_ms.append(1e3 * (time.perf_counter() - switched))
    print(
        f"{requests} requests: median switch {np.median(switch_ms):.3f} ms, median inference "
        f"{np.median(run_ms):.3f} ms"
    )
    return result.report
