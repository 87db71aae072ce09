"""The search: MetaSchedule's evolutionary search with an XGBoost cost model over each kernel
the database has no schedule for, and a baseline per kernel so the database keeps the faster."""

from __future__ import annotations

import logging
import os
import sys
import time

import tvm
import tvm.s_tir.meta_schedule as ms
from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from ...progress import LogLines, log
from .database import database_bytes, open_database
from .kernels import default_schedule, kernels
from .measurement import (
    EVALUATOR,
    RPC_SESSION_SECONDS,
    InProcessBuilder,
    InProcessRunner,
    measure,
    rpc_alloc_arguments,
)
from .options import RPCTracker, TuningReport

# TVM's evolutionary search at a quarter of its population and 3 of 4 generations: its search,
# not the measurements, dominated tuning on 2 cores (20 s per round for one matmul).
SEARCH = {"population_size": 128, "genetic_num_iters": 3}


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
            for kernel in todo.values():
                _add_baseline(database, kernel, target)
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
    database: ms.database.Database, kernel: tvm.IRModule, target: tvm.target.Target
) -> None:
    """Time the schedule an untuned build gives the kernel (`default_schedule`) like a trial
    and record it: a build then keeps it unless a tuned one beats it by a margin (see
    `apply_database`). A few trials can leave only candidates slower than it (for a tiny
    matmul, parallel ones 25x slower here; for a gather, MetaSchedule's one design, pages fused
    into one parallel loop, 5x slower than copying each page with vector instructions)."""
    sch = default_schedule(kernel, target)
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
        builder, runner = InProcessBuilder(), InProcessRunner()
    else:
        builder = InProcessBuilder(export=True)
        runner = ms.runner.RPCRunner(
            ms.runner.RPCConfig(
                rpc.host, rpc.port, rpc.key, session_timeout_sec=RPC_SESSION_SECONDS
            ),
            EVALUATOR,
            f_alloc_argument=rpc_alloc_arguments,
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
