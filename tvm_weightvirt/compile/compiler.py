"""Lowering (task modules + page plan -> one Relax module) and compilation with TVM."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import tvm
from tvm import relax

from ..abi import (
    CODE_FORMAT_ATTR,
    EXCLUSIVE_GATHER_FUNC,
    GATHER_FUNC,
    GATHER_OUTPUT,
    MODE_ATTR,
    MODES,
    task_of,
    weight_transform_function,
)
from ..coded_pages import CodeFormat
from ..frontend.task import Task
from ..passes import (
    AddPageGather,
    ConvWeightsOutputChannelsLast,
    ExclusivePageLoader,
    LiftWeightTransforms,
    MergeTasks,
    VirtualizeWeights,
)
from ..plan import PagePlan
from .cpu_schedule import default_pipeline
from .library import Library, TaskSignature, check_archs, sm_number
from .native_log import TAKE_FAST_MODE, without_native_lines

if TYPE_CHECKING:
    from .tuning import TuningOptions


def lower(tasks: Sequence[Task], plan: PagePlan, mode: str = "materialize") -> tvm.IRModule:
    """One module with `task_<name>` per task whose weights come from the page pool.

    mode "materialize" (NWV's design): `wv_gather_pages(pool, page_table, weight_pages)` gathers
    a task's pages into one contiguous buffer at a context switch; the weights are views of that
    buffer, and `wv_transform_task_<name>(weights)` then runs the model's weight-only ops
    (transposes, ...) once, so that `task_<name>(inputs..., transformed...)` does not. When the plan
    has exclusive pages, `wv_gather_pages_exclusive` also reads them from a level-2 scratch;
    with SmartDeal pages (`plan.coded`), `wv_gather_coded_pages` (and
    `wv_gather_coded_pages_exclusive`) decode them as they gather.
    mode "fused": `task_<name>(inputs..., pool, page_table)` gathers inside every call; a
    switch is free (no exclusive pages yet).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = [t.name for t in tasks]
    if sorted(names) != sorted(plan.tasks):
        raise ValueError(f"tasks {sorted(names)} do not match the page plan's {sorted(plan.tasks)}")
    for t in tasks:
        layout = plan.task(t.name).layout
        if list(t.weights) != layout.names:
            raise ValueError(
                f"task '{t.name}': weights {list(t.weights)} are not the plan's layout "
                f"{layout.names} (same names, same order)"
            )
        for (name, w), span in zip(t.weights.items(), layout.spans):
            if tuple(w.shape) != span.shape:
                raise ValueError(
                    f"task '{t.name}': weight '{name}' is {tuple(w.shape)}, the plan stores it "
                    f"as {span.shape}: lower the tasks the plan was packed from (a plan of "
                    "tasks in kernel layout needs `task.in_kernel_layout()`)"
                )
    has_exclusive = any(t.n_exclusive_pages for t in plan.tasks.values())
    if has_exclusive and mode == "fused":
        raise NotImplementedError("exclusive pages are lowered for materialize mode only")
    coded = plan.coded is not None
    if coded and mode == "fused":
        raise NotImplementedError("SmartDeal pages are lowered for materialize mode only")
    table_dtype = plan.page_table_dtype.name
    pipeline = [
        # Step 1. One Relax function per task, identical kernels once; convolution weights
        # read as vectors of output channels (the permute is a weight transform).
        MergeTasks({t.name: t.mod for t in tasks}),
        ConvWeightsOutputChannelsLast(),
        # Step 2. The pool reaches the weights: one gather per switch, or per call.
        AddPageGather(plan.page_size, plan.coded and plan.coded.format, table_dtype)
        if mode == "materialize"
        else VirtualizeWeights(plan),
    ]
    if has_exclusive:
        # Step 3. Exclusive pages come from a level-2 scratch the runtime fills.
        pipeline.append(
            ExclusivePageLoader(plan.page_size, plan.coded and plan.coded.format, table_dtype)
        )
    if mode == "materialize":
        # Step 4. Weight-only ops run once per switch, not per inference.
        pipeline.append(LiftWeightTransforms())
    mod = tvm.transform.Sequential(pipeline, name="wv.lower")(tvm.IRModule())
    mod = mod.with_attr(MODE_ATTR, mode)
    if coded:
        fmt = plan.coded.format
        mod = mod.with_attr(CODE_FORMAT_ATTR, f"{fmt.width},{fmt.min_exponent}")
    return mod


def build(
    mod: tvm.IRModule,
    target: str | dict = "llvm",
    tuning: TuningOptions | None = None,
    archs: Sequence[str] | None = None,
) -> Library:
    """Compile a lowered module (fused kernels: TVM's default pipeline for the target, on CPUs
    with the project's default schedules, see `compile/cpu_schedule.py`).

    With `tuning`, the kernels get their best schedules from its MetaSchedule database, after
    its trials per kernel the database has none for yet (see `compile/tuning`).

    For cuda, the kernels are generated for the target's `arch`; `archs` (default: that arch)
    are the GPUs whose machine code `Library.export` puts in the library, each at or above it:
    e.g. target arch sm_72 with archs sm_72, sm_87, sm_90.
    """
    start = time.perf_counter()  # the build's time includes tuning
    target = tvm.target.Target(target)
    archs = _cuda_archs(target, archs)
    mode = str((mod.attrs or {}).get(MODE_ATTR, ""))
    if mode not in MODES:
        raise ValueError(f"build takes a module from `lower` (it has no '{MODE_ATTR}' attribute)")
    tasks = {
        task_of(gv.name_hint): _signature(mod, gv.name_hint, mode)
        for gv, func in mod.functions_items()
        if isinstance(func, relax.Function) and task_of(gv.name_hint)
    }
    pipeline, report = default_pipeline(target), None
    if tuning is not None:
        from .tuning import scheduled_pipeline, tune_and_apply

        mod, target, tuned = tune_and_apply(mod, target, tuning)
        pipeline, report = scheduled_pipeline(target), asdict(tuned)
    if mode == "materialize" and target.kind.name == "llvm":
        mod = _vectorize_gather(mod)
    with target, without_native_lines(TAKE_FAST_MODE):
        executable = tvm.compile(mod, target, relax_pipeline=pipeline)
    seconds = time.perf_counter() - start
    code_format = (mod.attrs or {}).get(CODE_FORMAT_ATTR)
    code_format = CodeFormat(*map(int, str(code_format).split(","))) if code_format else None
    return Library(executable, str(target), mode, tasks, seconds, report, archs, code_format)


def _cuda_archs(target: tvm.target.Target, archs: Sequence[str] | None) -> tuple[str, ...]:
    if target.kind.name != "cuda":
        if archs:
            raise ValueError(f"archs {list(archs)} apply to cuda targets, not {target.kind.name}")
        return ()
    generated = str(target.attrs.get("arch", ""))
    if not generated:
        raise ValueError("a cuda target needs its arch, e.g. {'kind': 'cuda', 'arch': 'sm_87'}")
    archs = check_archs(archs or [generated])
    below = [a for a in archs if sm_number(a) < sm_number(generated)]
    if below:
        raise ValueError(
            f"archs {below} are below the target's arch {generated}, for which the kernels are "
            f"generated: build for the lowest arch ({min(archs, key=sm_number)})"
        )
    return archs


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


def _signature(mod: tvm.IRModule, name: str, mode: str) -> TaskSignature:
    func = mod[name]
    n_in = int(func.attrs["num_input"])
    types = [_tensor_type(p.ty) for p in func.params]
    outputs = tuple(map(_tensor_type, _flat_tensor_types(func.ret_ty)))
    if mode == "materialize":  # the weights the switch's transform takes (see abi), if any
        transform = weight_transform_function(name)
        if transform in [gv.name_hint for gv in mod.get_global_vars()]:
            (weights,) = mod[transform].params
            weight_types = tuple(map(_tensor_type, weights.ty.fields))
        else:
            weight_types = tuple(types[n_in:])
        return TaskSignature(tuple(types[:n_in]), weight_types, None, None, outputs)
    pool_shape, (table_shape, _) = types[n_in][0], types[n_in + 1]
    return TaskSignature(tuple(types[:n_in]), (), table_shape[0], pool_shape, outputs)


def _flat_tensor_types(ty) -> list:
    """A function's return type as the flat list of its tensors' types, in the order
    `runtime.io.outputs_to_numpy` hands the outputs back (nested tuples flattened)."""
    if isinstance(ty, relax.TupleType):
        return [t for field in ty.fields for t in _flat_tensor_types(field)]
    return [ty]


def _tensor_type(ty) -> tuple[tuple[int, ...], str]:
    return tuple(int(d) for d in ty.shape.values), str(ty.dtype)
