"""The kernels tuning searches: a lowered module legalized and fused as TVM's default pipeline
does, each structurally unique kernel once, the page gathers in a static form."""

from __future__ import annotations

import tvm
import tvm.s_tir.meta_schedule as ms
from tvm import relax

from ...abi import EXCLUSIVE_GATHER_FUNC, GATHER_FUNC, GATHER_OUTPUT
from ...passes.add_page_gather import gather_func
from ..cpu_schedule import DEFAULT_RULES
from ..fusion import legalize_and_fuse
from ..native_log import TAKE_FAST_MODE, without_native_lines

GATHER_TUNING_PAGES = 256  # the page counts the gathers are timed at (a 100 KB copy at P=100)


def tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """MetaSchedule needs the CPU's core count in an llvm target, and the per-block limits in a
    cuda one (here: those of every NVIDIA GPU since Kepler, Jetson Orin's included)."""
    config = dict(target.export())
    if target.kind.name == "llvm":
        config.setdefault("num-cores", ms.utils.cpu_count(logical=False))
    elif target.kind.name == "cuda":
        config.setdefault("max_threads_per_block", 1024)
        config.setdefault("max_shared_memory_per_block", 48 * 1024)
        config.setdefault("registers_per_block", 65536)
    return tvm.target.Target(config)


def fuse(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize and fuse as TVM's default pipeline does: its PrimFuncs are the kernels to tune."""
    pipeline = relax.pipeline.library_dispatch_passes(target) + legalize_and_fuse()
    with target, without_native_lines(TAKE_FAST_MODE):
        return tvm.transform.Sequential(pipeline, name="wv.fuse")(mod)


def kernels(mod: tvm.IRModule, target: tvm.target.Target) -> dict[str, tvm.IRModule]:
    """The structurally unique kernels of a fused module, each as a one-function module: those
    the tasks call, and the page gathers the runtime calls directly (materialize mode) in their
    static form (MetaSchedule times static shapes only)."""
    found = {
        task.task_name: task.dispatched[0]
        for task in ms.relax_integration.extract_tasks(mod, target)
    }
    for name, func in gathers(mod).items():
        found[name] = static_gather(name, func)
    return found


def gathers(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {
        gv.name_hint: func
        for gv, func in mod.functions_items()
        if gv.name_hint in (GATHER_FUNC, EXCLUSIVE_GATHER_FUNC)
    }


def default_schedule(kernel: tvm.IRModule, target: tvm.target.Target) -> tvm.s_tir.Schedule:
    """The schedule an untuned build gives a kernel (one-function module): a gather copies each
    page with vector instructions on CPUs; other kernels get the project's default CPU
    schedule where it applies (`compile/cpu_schedule.py`), else stay as TVM legalized them."""
    func = kernel["main"]
    if target.kind.name == "llvm":
        blocks = [b.name_hint for b in _blocks(func)]
        if GATHER_OUTPUT in blocks:
            sch = tvm.s_tir.Schedule(kernel)
            _, along_page = sch.get_loops(sch.get_sblock(GATHER_OUTPUT))
            sch.vectorize(along_page)
            return sch
        for rule in DEFAULT_RULES:
            scheduled = rule.apply(func, target, False)
            if scheduled is not None:
                return scheduled
    return tvm.s_tir.Schedule(kernel)


def _blocks(func: tvm.tirx.PrimFunc) -> list:
    sch = tvm.s_tir.Schedule(func)
    return [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]


def static_gather(name: str, func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The gather for GATHER_TUNING_PAGES pages of every kind: its schedule (a loop nest over a
    copy of pages) replays onto the gather for any page counts."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    _, along_page = sch.get_loops(sch.get_sblock(GATHER_OUTPUT))
    page_size = int(sch.get(along_page).extent)
    table_dtype = str(func.params[-2].dtype)  # (..., page_table, weight_pages)
    static = gather_func(page_size, table_dtype, name == EXCLUSIVE_GATHER_FUNC, GATHER_TUNING_PAGES)
    return tvm.IRModule({"main": static})
