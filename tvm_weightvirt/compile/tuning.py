"""MetaSchedule auto-tuning of a merged multitask module: each unique kernel once, into a database
that later builds reuse."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import tvm
import tvm.s_tir.meta_schedule as ms
from tqdm import tqdm
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import dlight as dl
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import (
    EvaluatorConfig,
    LocalRunnerFuture,
    PyRunner,
    RunnerFuture,
    RunnerInput,
)
from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

from ..abi import EXCLUSIVE_GATHER_FUNC, GATHER_FUNC, GATHER_OUTPUT
from ..passes.add_page_gather import gather_func
from ..progress import LogLines, log
from .native_log import TAKE_FAST_MODE, without_native_lines

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
# Each candidate is timed for at least this long: enough to rank kernels of microseconds.
EVALUATOR = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
# TVM's evolutionary search at a quarter of its population and 3 of 4 generations: its search,
# not the measurements, dominated tuning on 2 cores (20 s per round for one matmul).
SEARCH = {"population_size": 128, "genetic_num_iters": 3}
GATHER_TUNING_PAGES = 256  # the page counts the gathers are timed at (a 100 KB copy at P=100)
RPC_SESSION_SECONDS = 120  # a popen worker's first session imports TVM (seconds on small boards)


@dataclass(frozen=True)
class RPCTracker:
    """Where candidates are measured remotely: a TVM RPC tracker and the key of its devices."""

    host: str
    port: int
    key: str

    @staticmethod
    def parse(address: str, key: str) -> RPCTracker:
        """`HOST:PORT` (the `--rpc-tracker` option) and a device key."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--rpc-tracker must be HOST:PORT, got {address!r}")
        if not key:
            raise ValueError("--rpc-tracker needs --rpc-key (the key the device registered)")
        return RPCTracker(host, int(port), key)


@dataclass
class TuningReport:
    """What tuning did for one build."""

    kernels: int  # structurally unique kernels in the module
    reused: int  # of them, tuned in the database before this build
    trials: int  # candidates measured in this build
    seconds: float  # tuning (0 when the database only applies)
    database_bytes: int
    scheduled: int = 0  # kernels built with a schedule from the database


def tune_and_apply(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    trials: int,
    database_dir: str | None,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
) -> tuple[tvm.IRModule, tvm.target.Target, TuningReport]:
    """`wv.build`'s tuning step: the lowered module fused and scheduled from the database after
    `trials` per kernel not in it yet (0: apply only), the target it was tuned for (with the
    attributes MetaSchedule needs, see `tuning_target`) and what was done."""
    if trials < 0:
        raise ValueError(f"tune must be a number of trials per kernel >= 0, got {trials}")
    if database_dir is None:
        raise ValueError("tune needs tuning_db (--tuning-db): the folder records go to")
    if rpc_key and not rpc_tracker:
        raise ValueError("--rpc-key names a device of an RPC tracker: give --rpc-tracker too")
    if rpc_tracker and not trials:
        raise ValueError("--rpc-tracker measures tuning trials: give --tune TRIALS too")
    if not trials and not os.path.isdir(database_dir):
        raise ValueError(f"no tuning database at '{database_dir}': tune into it first (--tune)")
    rpc = RPCTracker.parse(rpc_tracker, rpc_key or "") if rpc_tracker else None
    target = tuning_target(target)
    fused = fuse(mod, target)
    if trials:
        report = tune(fused, target, trials, database_dir, rpc)
    else:
        report = TuningReport(len(kernels(fused, target)), 0, 0, 0.0, 0)
    applied, report.scheduled = apply_database(fused, target, database_dir)
    report.database_bytes = database_bytes(database_dir)
    return applied, target, report


# **** the database ****


def open_database(directory: str) -> ms.database.JSONDatabase:
    """The JSON database in `directory` (created if missing); a file that is not MetaSchedule's
    JSON lines raises ValueError naming it."""
    os.makedirs(directory, exist_ok=True)
    for name in DATABASE_FILES:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as err:
                        raise ValueError(
                            f"tuning database '{path}' is corrupt: line {number} is not JSON "
                            f"({err}); delete the folder to tune again"
                        ) from err
                    if not isinstance(row, list):
                        raise ValueError(
                            f"tuning database '{path}' is corrupt: line {number} is not a "
                            "MetaSchedule record; delete the folder to tune again"
                        )
    try:
        return ms.database.JSONDatabase(work_dir=directory)
    except Exception as err:  # TVM raises its own error types from C++
        raise ValueError(
            f"tuning database '{directory}' is corrupt: MetaSchedule cannot read it ({err}); "
            "delete the folder to tune again"
        ) from err


def database_bytes(directory: str) -> int:
    paths = [os.path.join(directory, name) for name in DATABASE_FILES]
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p))


# **** kernels ****


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
    pipeline = relax.pipeline.library_dispatch_passes(target) + [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
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
    for name, func in _gathers(mod).items():
        found[name] = _static_gather(name, func)
    return found


def _gathers(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {
        gv.name_hint: func
        for gv, func in mod.functions_items()
        if gv.name_hint in (GATHER_FUNC, EXCLUSIVE_GATHER_FUNC)
    }


def _static_gather(name: str, func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The gather for GATHER_TUNING_PAGES pages of every kind: its schedule (a loop nest over a
    copy of pages) replays onto the gather for any page counts."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    _, along_page = sch.get_loops(sch.get_sblock(GATHER_OUTPUT))
    page_size = int(sch.get(along_page).extent)
    static = gather_func(page_size, name == EXCLUSIVE_GATHER_FUNC, GATHER_TUNING_PAGES)
    return tvm.IRModule({"main": static})


# **** tuning ****


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    trials: int,
    database_dir: str,
    rpc: RPCTracker | None = None,
) -> TuningReport:
    """Tune each unique kernel of the fused module `mod` that the database has no schedule for,
    `trials` measured candidates per kernel (XGBoost cost model), recording into the database.

    Candidates are built and timed in this process (a worker process spends most of a trial
    importing TVM), or timed through TVM's RPC tracker on a device with `rpc`.
    """
    kind = target.kind.name
    if rpc is None and kind != "llvm" and not tvm.runtime.device(kind, 0).exist:
        raise ValueError(
            f"tuning for {kind} needs a GPU to time candidates and this machine has none: tune "
            "on a machine with one, or measure on a device with --rpc-tracker/--rpc-key (a "
            "database tuned elsewhere applies here with --tuning-db alone)"
        )
    start = time.perf_counter()
    database = open_database(database_dir)
    found = kernels(mod, target)
    todo = {
        name: kernel
        for name, kernel in found.items()
        if database.query_tuning_record(kernel, target, "main") is None
    }
    before = len(database)
    if todo:
        log.info(
            f"tuning {len(todo)} of {len(found)} kernels ({len(found) - len(todo)} from "
            f"'{database_dir}'), {trials} trials each on {target.kind.name}"
            + (f" via RPC {rpc.host}:{rpc.port} key '{rpc.key}'" if rpc else ""),
        )
        _tune_kernels(todo, target, trials, database, database_dir, rpc)
        if rpc is None:
            for name, kernel in todo.items():
                _add_baseline(database, kernel, target, name in _gathers(mod))
    else:
        log.info(f"all {len(found)} kernels are tuned in '{database_dir}': no trials")
    return TuningReport(
        kernels=len(found),
        reused=len(found) - len(todo),
        trials=len(database) - before,
        seconds=time.perf_counter() - start,
        database_bytes=database_bytes(database_dir),
    )


def _add_baseline(
    database: ms.database.Database, kernel: tvm.IRModule, target: tvm.target.Target, gather: bool
) -> None:
    """Time the schedule an untuned build gives the kernel like a trial and record it, so the
    database keeps the faster: a few trials can leave only candidates slower than it (for a
    tiny matmul, parallel ones 25x slower here; for a gather, MetaSchedule's one design, pages
    fused into one parallel loop, 5x slower than copying each page with vector instructions)."""
    sch = tvm.s_tir.Schedule(kernel)
    if gather:
        _, along_page = sch.get_loops(sch.get_sblock(GATHER_OUTPUT))
        sch.vectorize(along_page)
    database.commit_tuning_record(
        ms.database.TuningRecord(
            sch.trace,
            database.commit_workload(kernel),
            run_secs=[measure(sch.mod, target)],
            target=target,
            args_info=ms.arg_info.ArgInfo.from_prim_func(kernel["main"]),
        )
    )


def _tune_kernels(
    todo: dict[str, tvm.IRModule],
    target: tvm.target.Target,
    trials: int,
    database: ms.database.Database,
    database_dir: str,
    rpc: RPCTracker | None,
) -> None:
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    loggers = [_kernel_logger(database_dir, name) for name in todo]
    contexts = [
        ms.TuneContext(
            mod=kernel,
            target=target,
            space_generator="post-order-apply",
            search_strategy=ms.search_strategy.EvolutionarySearch(**SEARCH),
            task_name=name,
            logger=logger,
            rand_state=seed,
            num_threads="physical",
        )
        for seed, ((name, kernel), logger) in enumerate(zip(todo.items(), loggers))
    ]
    if rpc is None:
        builder, runner = _InProcessBuilder(), _InProcessRunner()
    else:
        builder = _InProcessBuilder(export=True)
        runner = ms.runner.RPCRunner(
            ms.runner.RPCConfig(
                rpc.host, rpc.port, rpc.key, session_timeout_sec=RPC_SESSION_SECONDS
            ),
            EVALUATOR,
            f_alloc_argument=_rpc_alloc_arguments,
        )
    total = trials * len(todo)
    bar = tqdm(total=total, desc="tuning", unit="trial", disable=not sys.stderr.isatty())
    callbacks = [
        ms.measure_callback.AddToDatabase(),
        ms.measure_callback.UpdateCostModel(),
        _Progress(bar, LogLines("tuning trials", total)),
    ]
    if rpc is not None:  # the exported archives
        callbacks.append(ms.measure_callback.RemoveBuildArtifact())
    try:
        ms.TaskScheduler.create("round-robin").tune(
            tasks=contexts,
            task_weights=[1.0] * len(contexts),
            max_trials_global=trials * len(contexts),
            max_trials_per_task=trials,
            num_trials_per_iter=min(trials, 16),
            builder=builder,
            runner=runner,
            measure_callbacks=callbacks,
            database=database,
            cost_model=ms.CostModel.create("xgb", num_tuning_cores=contexts[0].num_threads),
        )
    finally:
        bar.close()
        for logger in loggers:
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)


def _kernel_logger(database_dir: str, name: str) -> logging.Logger:
    """MetaSchedule's log of one kernel's search, in `<database>/logs/<kernel>.log` (TVM's own
    `get_loggers_from_work_dir` fails on a second database in one process)."""
    os.makedirs(os.path.join(database_dir, "logs"), exist_ok=True)
    logger = logging.getLogger(f"tvm_weightvirt.compile.tuning.{name}")
    logger.addHandler(logging.FileHandler(os.path.join(database_dir, "logs", f"{name}.log")))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


@derived_object
class _Progress(PyMeasureCallback):
    """Advances a progress bar (on a terminal) or log lines by the candidates measured; the bar
    shows the kernel and its best time."""

    def __init__(self, bar: tqdm, lines: LogLines) -> None:
        self.bar, self.lines = bar, lines
        self.best: dict[int, float] = {}

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        times = [
            sum(float(s) for s in r.run_secs) / len(r.run_secs)
            for r in runner_results
            if r.run_secs is not None and r.error_msg is None
        ]
        if times:
            self.best[task_id] = min(times + [self.best.get(task_id, float("inf"))])
        name = task_scheduler.tasks_[task_id].ctx.task_name
        best = self.best.get(task_id)
        self.bar.set_postfix_str(f"{name}: best {1e6 * best:.1f} us" if best else name)
        self.bar.update(len(measure_candidates))
        if self.bar.disable:
            self.lines.advance(len(measure_candidates))


# **** in-process measurement ****

_BUILT: dict[str, tvm.runtime.Module] = {}  # in-process builds, by artifact key


@derived_object
class _InProcessBuilder(PyBuilder):
    """Builds candidates in this process; keeps them in memory, or (`export`) writes the
    archive that an RPC runner uploads."""

    def __init__(self, export: bool = False) -> None:
        super().__init__()
        self.export = export

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        results = []
        for build_input in build_inputs:
            try:
                module = default_build(build_input.mod, build_input.target, None)
            except Exception as err:  # a candidate that does not compile is a failed trial
                results.append(BuilderResult(None, f"build failed: {err}"))
                continue
            if self.export:
                results.append(BuilderResult(default_export(module), None))
            else:
                key = f"in-process-{len(_BUILT)}-{id(module)}"
                _BUILT[key] = module
                results.append(BuilderResult(key, None))
        return results


@derived_object
class _InProcessRunner(PyRunner):
    """Times the in-process builds on this machine's device, one after another."""

    def run(self, runner_inputs: list[RunnerInput]) -> list[RunnerFuture]:
        futures = []
        for runner_input in runner_inputs:
            module = _BUILT.pop(str(runner_input.artifact_path))
            device = tvm.runtime.device(str(runner_input.device_type), 0)
            try:
                args = alloc_arguments(device, [a.as_json() for a in runner_input.args_info])
                seconds = run_evaluator_common(module, device, EVALUATOR, [args])
                futures.append(LocalRunnerFuture(res=seconds, error_message=None))
            except Exception as err:  # a candidate that crashes or fails checks
                futures.append(LocalRunnerFuture(res=None, error_message=f"run failed: {err}"))
        return futures


def measure(kernel: tvm.IRModule, target: tvm.target.Target) -> float:
    """Seconds per call of a one-kernel module on this machine, timed as trials are."""
    device = tvm.runtime.device("cpu" if target.kind.name == "llvm" else target.kind.name, 0)
    args_info = [a.as_json() for a in ms.arg_info.ArgInfo.from_prim_func(kernel["main"])]
    module = default_build(kernel, target, None)
    seconds = run_evaluator_common(module, device, EVALUATOR, [alloc_arguments(device, args_info)])
    return float(np.median(seconds))


def alloc_arguments(device: tvm.runtime.Device, args_info: list) -> list[tvm.runtime.Tensor]:
    """A candidate's arguments: random floats, and zeros for integers, which index tensors
    (page tables, `take`): a random index would read out of bounds and crash the process."""
    rng = np.random.default_rng(0)
    args = []
    for _, dtype, shape in args_info:  # ("TENSOR", dtype, shape)
        if "int" in str(dtype):
            host = np.zeros([int(d) for d in shape], str(dtype))
        else:
            host = rng.uniform(-1, 1, [int(d) for d in shape]).astype(str(dtype))
        args.append(tvm.runtime.tensor(host, device))
    return args


def _rpc_alloc_arguments(
    session, device: tvm.runtime.Device, args_info: list, alloc_repeat: int
) -> list[list[tvm.runtime.Tensor]]:
    """`alloc_arguments` for RPCRunner (runs in its worker process, on the remote device)."""
    return [alloc_arguments(device, args_info) for _ in range(alloc_repeat)]


# **** applying ****


def apply_database(
    mod: tvm.IRModule, target: tvm.target.Target, database_dir: str
) -> tuple[tvm.IRModule, int]:
    """The fused module `mod` with each kernel the database has a schedule for replaced by its
    best schedule (the gathers get their static form's); also how many kernels got one."""
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
    for name, func in _gathers(applied).items():
        record = database.query_tuning_record(_static_gather(name, func), target, "main")
        if record is not None:
            sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
            record.trace.apply_to_schedule(sch, remove_postproc=False)
            applied[name] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    n_scheduled = sum(
        1
        for _, func in applied.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and "tirx.is_scheduled" in func.attrs
    )
    return applied, n_scheduled


def scheduled_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's default pipeline for a module already fused and scheduled from a database: on GPUs
    dlight schedules the kernels the database has nothing for, then Relax is lowered."""
    passes = []
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
