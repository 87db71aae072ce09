"""Timing candidates: built and run in this process (a worker process spends most of a trial
importing TVM), or exported for an RPC runner on a device."""

from __future__ import annotations

import numpy as np
import tvm
import tvm.s_tir.meta_schedule as ms
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
from tvm.s_tir.meta_schedule.runner import (
    EvaluatorConfig,
    LocalRunnerFuture,
    PyRunner,
    RunnerFuture,
    RunnerInput,
)
from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

# Each candidate is timed for at least this long: enough to rank kernels of microseconds.
EVALUATOR = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
RPC_SESSION_SECONDS = 120  # a popen worker's first session imports TVM (seconds on small boards)

_BUILT: dict[str, tvm.runtime.Module] = {}  # in-process builds, by artifact key


@derived_object
class InProcessBuilder(PyBuilder):
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
class InProcessRunner(PyRunner):
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


def rpc_alloc_arguments(
    session, device: tvm.runtime.Device, args_info: list, alloc_repeat: int
) -> list[list[tvm.runtime.Tensor]]:
    """`alloc_arguments` for RPCRunner (runs in its worker process, on the remote device)."""
    return [alloc_arguments(device, args_info) for _ in range(alloc_repeat)]
