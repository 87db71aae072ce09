"""Lowering (task modules + page plan -> one Relax module) and compilation with TVM."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import tvm
from tvm import relax

from ..abi import (
    EXCLUSIVE_GATHER_FUNC,
    GATHER_FUNC,
    GATHER_OUTPUT,
    MODE_ATTR,
    MODES,
    TASK_PREFIX,
    task_of,
)
from ..frontend.task import Task
from ..passes import AddPageGather, ExclusivePageLoader, MergeTasks, VirtualizeWeights
from ..plan import PagePlan
from .native_log import TAKE_FAST_MODE, without_native_lines

if TYPE_CHECKING:
    from .tuning import TuningOptions


def lower(tasks: Sequence[Task], plan: PagePlan, mode: str = "materialize") -> tvm.IRModule:
    """One module with `task_<name>` per task whose weights come from the page pool.

    mode "materialize" (NWV's design): `task_<name>(inputs..., weights...)` is the plain model
    and `wv_gather_pages(pool, page_table, weight_pages)` gathers a task's pages into one
    contiguous buffer at a context switch; the weights are views of that buffer. When the plan
    has exclusive pages, `wv_gather_pages_exclusive` also reads them from a level-2 scratch;
    with SmartDeal pages (`plan.coded`), `wv_gather_coded_pages` decodes them as it gathers.
    mode "fused": `task_<name>(inputs..., pool, page_table)` gathers inside every call; a
    switch is free (no exclusive pages yet).
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
                f"{plan.task(t.name).layout.names} (same names, same order)"
            )
    has_exclusive = any(t.n_exclusive_pages for t in plan.tasks.values())
    if has_exclusive and mode == "fused":
        raise NotImplementedError("exclusive pages are lowered for materialize mode only")
    coded = plan.coded is not None
    if coded and mode == "fused":
        raise NotImplementedError("SmartDeal pages are lowered for materialize mode only")
    pipeline = [
        # Step 1. One Relax function per task, identical kernels once.
        MergeTasks({t.name: t.mod for t in tasks}),
        # Step 2. The pool reaches the weights: one gather per switch, or per call.
        AddPageGather(plan.page_size, coded) if mode == "materialize" else VirtualizeWeights(plan),
    ]
    if has_exclusive:
        # Step 3. Exclusive pages come from a level-2 scratch the runtime fills.
        pipeline.append(ExclusivePageLoader(plan.page_size))
    mod = tvm.transform.Sequential(pipeline, name="wv.lower")(tvm.IRModule())
    return mod.with_attr(MODE_ATTR, mode)


@dataclass(frozen=True)
class TaskSignature:
    """What a compiled task function takes: its inputs and, per mode, its weights or pages."""

    inputs: tuple[tuple[tuple[int, ...], str], ...]
    weights: tuple[tuple[tuple[int, ...], str], ...]  # materialize mode
    n_pages: int | None  # fused mode: page table length
    pool_shape: tuple[int, int] | None  # fused mode: the pool the module was lowered for


@dataclass
class Library:
    """A compiled multitask module and what a runtime needs to call it."""

    executable: relax.VMExecutable
    target: tvm.target.Target
    mode: str
    tasks: dict[str, TaskSignature]
    compile_seconds: float
    tuning: dict | None = None  # a tuned build's TuningReport fields

    def kernels(self) -> dict[str, list[str]]:
        """The compiled kernels each `task_<name>` function calls, in call order."""
        calls, task = {}, None
        for line in self.executable.as_text().splitlines():
            header = re.match(rf"@{TASK_PREFIX}(\w+):", line)
            if header:
                task = header.group(1) if header.group(1) in self.tasks else None
                continue
            call = re.match(r"\s+call\s+(\S+)\s+in:", line)
            if task and call and not call.group(1).startswith("vm.builtin."):
                calls.setdefault(task, []).append(call.group(1))
        return calls

    def export(self, directory: str) -> None:
        """`library.so` (TVM's export) and `library.json` (mode, target, task signatures)."""
        os.makedirs(directory, exist_ok=True)
        self.executable.export_library(os.path.join(directory, "library.so"))
        meta = {
            "mode": self.mode,
            "target": str(self.target),
            "tasks": {n: asdict(s) for n, s in self.tasks.items()},
            "compile_seconds": self.compile_seconds,
            "tuning": self.tuning,
        }
        with open(os.path.join(directory, "library.json"), "w") as f:
            json.dump(meta, f, indent=1)

    @staticmethod
    def load(directory: str) -> Library:
        path = os.path.join(directory, "library.json")
        if not os.path.isfile(path):
            raise ValueError(f"'{directory}' holds no library.json: not a `wvirt build` folder")
        with open(path) as f:
            meta = json.load(f)
        tasks = {
            n: TaskSignature(
                tuple((tuple(shape), dtype) for shape, dtype in s["inputs"]),
                tuple((tuple(shape), dtype) for shape, dtype in s["weights"]),
                s["n_pages"],
                tuple(s["pool_shape"]) if s["pool_shape"] else None,
            )
            for n, s in meta["tasks"].items()
        }
        target = tvm.target.Target(meta["target"])
        if target.kind.name == "cuda" and not tvm.cuda().exist:
            raise ValueError(
                f"'{directory}' was built for cuda and this machine has no CUDA GPU: run it "
                "on the device, or build for llvm here"
            )
        executable = tvm.runtime.load_module(os.path.join(directory, "library.so"))
        return Library(
            executable,
            target,
            meta["mode"],
            tasks,
            meta["compile_seconds"],
            meta.get("tuning"),
        )


def build(
    mod: tvm.IRModule,
    target: str | dict = "llvm",
    tuning: TuningOptions | None = None,
) -> Library:
    """Compile a lowered module (fused kernels: TVM's default pipeline for the target).

    With `tuning`, the kernels get their best schedules from its MetaSchedule database, after
    its trials per kernel the database has none for yet (see `compile/tuning`).
    """
    start = time.perf_counter()  # the build's time includes tuning
    target = tvm.target.Target(target)
    mode = str((mod.attrs or {}).get(MODE_ATTR, ""))
    if mode not in MODES:
        raise ValueError(f"build takes a module from `lower` (it has no '{MODE_ATTR}' attribute)")
    tasks = {
        task_of(gv.name_hint): _signature(func, mode)
        for gv, func in mod.functions_items()
        if isinstance(func, relax.Function) and task_of(gv.name_hint)
    }
    pipeline, report = relax.get_default_pipeline(target), None
    if tuning is not None:
        from .tuning import scheduled_pipeline, tune_and_apply

        mod, target, tuned = tune_and_apply(mod, target, tuning)
        pipeline, report = scheduled_pipeline(target), asdict(tuned)
    if mode == "materialize" and target.kind.name == "llvm":
        mod = _vectorize_gather(mod)
    with target, without_native_lines(TAKE_FAST_MODE):
        executable = tvm.compile(mod, target, relax_pipeline=pipeline)
    return Library(executable, target, mode, tasks, time.perf_counter() - start, report)


def _vectorize_gather(mod: tvm.IRModule) -> tvm.IRModule:
    """On CPUs, copy each page with vector instructions (GPU targets get dlight's schedule),
    unless a tuning database scheduled the gather."""
    sch = tvm.s_tir.Schedule(mod)
    for func in (GATHER_FUNC, EXCLUSIVE_GATHER_FUNC):
        if func in _names(mod) and "tirx.is_scheduled" not in (mod[func].attrs or {}):
            sch.work_on(func)
            _, along_page = sch.get_loops(sch.get_sblock(GATHER_OUTPUT))
            sch.vectorize(along_page)
    return sch.mod


def _names(mod: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv in mod.get_global_vars()]


def _signature(func: relax.Function, mode: str) -> TaskSignature:
    n_in = int(func.attrs["num_input"])
    types = [(tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype)) for p in func.params]
    if mode == "materialize":
        return TaskSignature(tuple(types[:n_in]), tuple(types[n_in:]), None, None)
    pool_shape, (table_shape, _) = types[n_in][0], types[n_in + 1]
    return TaskSignature(tuple(types[:n_in]), (), table_shape[0], pool_shape)
