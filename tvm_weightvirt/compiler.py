"""Lowering (task modules + page plan -> one Relax module) and compilation with TVM."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import tvm
from tvm import relax

from .passes import MergeTasks, VirtualizeWeights
from .plan import PagePlan
from .task import Task

MODES = ("materialize", "fused")


def lower(tasks: Sequence[Task], plan: PagePlan, mode: str = "materialize") -> tvm.IRModule:
    """One module with `task_<name>` per task, every weight read from the pool through pages.

    mode "materialize": the gather is lifted into `task_<name>_transform_params(pool,
    page_table)`, run once per context switch; `task_<name>(inputs..., weights...)` then runs
    at plain TVM speed. mode "fused": `task_<name>(inputs..., pool, page_table)` gathers on
    every call and a switch costs nothing.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = [t.name for t in tasks]
    if sorted(names) != sorted(plan.tasks):
        raise ValueError(f"tasks {sorted(names)} do not match the page plan's {sorted(plan.tasks)}")
    for t in tasks:
        if list(t.weights) != plan.task(t.name).layout.names:
            raise ValueError(
                f"task '{t.name}': weights {list(t.weights)} are not the plan's layout "
                f"{plan.task(t.name).layout.names} (same names, same order)")
    pipeline = [
        # Step 1. One Relax function per task, identical kernels once.
        MergeTasks({t.name: t.mod for t in tasks}),
        # Step 2. Weights become gathers from the shared pool through page tables.
        VirtualizeWeights(plan),
    ]
    if mode == "materialize":
        # Step 3. The gather (and weight-only work) moves to task_<name>_transform_params.
        pipeline.append(relax.transform.LiftTransformParams())
    return tvm.transform.Sequential(pipeline, name="wv.lower")(tvm.IRModule())


@dataclass
class Library:
    """A compiled multitask module and what a runtime needs to call it."""

    executable: relax.VMExecutable
    target: tvm.target.Target
    num_inputs: dict[str, int]
    materialize: bool
    compile_seconds: float


def build(mod: tvm.IRModule, target: str | dict = "llvm") -> Library:
    """Compile a lowered module (fused kernels: TVM's default pipeline for the target)."""
    target = tvm.target.Target(target)
    tasks = {
        gv.name_hint[len("task_") :]: int(func.attrs["num_input"])
        for gv, func in mod.functions_items()
        if isinstance(func, relax.Function)
        and gv.name_hint.startswith("task_")
        and not gv.name_hint.endswith("_transform_params")
    }
    materialize = any(gv.name_hint.endswith("_transform_params") for gv in mod.get_global_vars())
    start = time.perf_counter()
    executable = tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target))
    return Library(executable, target, tasks, materialize, time.perf_counter() - start)
