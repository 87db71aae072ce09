"""A build's tuning step: tune what the database lacks, then schedule the fused module from it,
and the pipeline that lowers the scheduled module."""

from __future__ import annotations

import importlib
import json
import os

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl
from tvm_ffi import structural_hash

from ..cpu_schedule import DEFAULT_RULES
from .database import database_bytes, open_database
from .kernels import default_schedule, fuse, gathers, kernels, static_gather, tuning_target
from .measurement import measure
from .options import TuningOptions, TuningReport
from .search import tune

# a tuned kernel replaces the default schedule only when its timing is this much lower
MARGIN = 0.10
CHOICES_FILE = "tuned_or_default.json"


def tune_and_apply(
    mod: tvm.IRModule, target: tvm.target.Target, options: TuningOptions
) -> tuple[tvm.IRModule, tvm.target.Target, TuningReport]:
    """`wv.build`'s tuning step: the lowered module fused and scheduled from the database after
    `options.trials` per kernel not in it yet (0: apply only), the target it was tuned for
    (with the attributes MetaSchedule needs, see `tuning_target`) and what was done."""
    target = tuning_target(target)
    fused = fuse(mod, target)
    if options.trials:
        report = tune(fused, target, options.trials, options.database, options.rpc)
    else:
        report = TuningReport(len(kernels(fused, target)), 0, 0, 0.0, 0)
    applied, report.scheduled, report.kept_default = apply_database(fused, target, options.database)
    report.database_bytes = database_bytes(options.database)
    return applied, target, report


def apply_database(
    mod: tvm.IRModule, target: tvm.target.Target, database_dir: str
) -> tuple[tvm.IRModule, int, int]:
    """The fused module `mod` with each kernel the database has a schedule for replaced by its
    best schedule (the gathers get their static form's), unless, on a target that runs on
    this machine, that schedule is not `MARGIN` faster than the kernel's default one (the
    pipeline then gives it the default); also how many kernels got a tuned schedule, and how
    many kept the default."""
    database = open_database(database_dir)
    # MetaSchedule looks schedules up by kernel alone: a CPU schedule must not reach a GPU build.
    kinds = {r.target.kind.name for r in database.get_all_tuning_records() if r.target}
    if kinds - {target.kind.name}:
        raise ValueError(
            f"tuning database '{database_dir}' holds schedules for {sorted(kinds)}, not "
            f"{target.kind.name}: use one database per target"
        )
    with target, database, tvm.transform.PassContext(opt_level=3):
        applied = relax.transform.MetaScheduleApplyDatabase()(mod)
    for name, func in gathers(applied).items():
        record = database.query_tuning_record(static_gather(name, func), target, "main")
        if record is not None:
            sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
            record.trace.apply_to_schedule(sch, remove_postproc=False)
            applied[name] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    kept_default = 0
    if _runs_here(target):
        choices, gather_names = KernelChoices(database_dir), set(gathers(mod))
        for gv, func in applied.functions_items():
            name = gv.name_hint
            if _is_scheduled(func) and name not in gather_names:
                if not choices.tuned_wins(mod[name], func, target):
                    applied[gv] = mod[gv]
                    kept_default += 1
        choices.save()
    n_scheduled = sum(1 for _, func in applied.functions_items() if _is_scheduled(func))
    return applied, n_scheduled, kept_default


def _is_scheduled(func) -> bool:
    return isinstance(func, tvm.tirx.PrimFunc) and "tirx.is_scheduled" in (func.attrs or {})


def _runs_here(target: tvm.target.Target) -> bool:
    """Whether kernels built for `target` run on this machine's CPU (so they can be timed)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    host = tvm.target.codegen.llvm_get_system_triple()
    return target.kind.name == "llvm" and triple in ("", host)


class KernelChoices:
    """Per kernel and database schedule, whether the schedule runs `MARGIN` faster than the
    kernel's default one, both timed on this machine, alternately, twice each (best of each).
    The database's own timings do not decide: they come from other runs, the best of many
    candidates is the luckiest of them, and MetaSchedule's query returned parallel max pools
    recorded at 12 us over the same workload's default record at 0.75 us. Each choice is timed once and kept in the database folder (`CHOICES_FILE`, keyed
    by the two kernels' structural hashes), so every build from the database (a multitask
    build, each plain model alone) makes the same choice."""

    def __init__(self, database_dir: str) -> None:
        self.path = os.path.join(database_dir, CHOICES_FILE)
        self.choices: dict[str, bool] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.choices = json.load(f)
        self.changed = False

    def tuned_wins(
        self, unscheduled: tvm.tirx.PrimFunc, tuned: tvm.tirx.PrimFunc, target: tvm.target.Target
    ) -> bool:
        key = f"{structural_hash(_kernel(unscheduled))}:{structural_hash(_kernel(tuned))}"
        if key not in self.choices:
            default = default_schedule(_kernel(unscheduled), target).mod
            seconds = {"tuned": [], "default": []}
            for _ in range(2):
                seconds["tuned"].append(measure(_kernel(tuned), target))
                seconds["default"].append(measure(default, target))
            self.choices[key] = min(seconds["tuned"]) < (1 - MARGIN) * min(seconds["default"])
            self.changed = True
        return self.choices[key]

    def save(self) -> None:
        if self.changed:
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.choices, f, indent=0)
            os.replace(self.path + ".tmp", self.path)


def _kernel(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def scheduled_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's default pipeline for a module already fused and scheduled from a database: the
    kernels the database has nothing for get dlight's schedules on GPUs and the project's
    default ones on CPUs (`compile/cpu_schedule.py`), then Relax is lowered."""
    passes = []
    if target.kind.name == "llvm":
        passes.append(dl.ApplyDefaultSchedule(*DEFAULT_RULES))
    if relax.pipeline.BackendDispatcher.is_gpu_target(target):
        passes.append(
            dl.ApplyDefaultSchedule(
                dl.gpu.Matmul(),
                dl.gpu.GEMV(),
                dl.gpu.Reduction(),
                dl.gpu.GeneralReduction(),
                dl.gpu.Fallback(),
            )
        )
    backend = {"llvm": "cpu_generic", "cuda": "cuda"}.get(target.kind.name, "gpu_generic")
    default = importlib.import_module(f"tvm.relax.backend.{backend}.pipeline")
    passes += default.dataflow_lower_passes(target) + default.finalize_passes(target)
    return tvm.transform.Sequential(passes, name="wv.scheduled_pipeline")
