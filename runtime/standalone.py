"""One task compiled alone by plain TVM, its weights passed as inputs (the reference), and the
two baselines built from it: all models resident, or each reloaded from storage per switch.
Each also loads from files saved by `save_alone` with TVM's runtime only (a device's case)."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import safetensors.numpy
import tvm
from tvm.runtime.vm import VirtualMachine

from .io import InputBuffers, outputs_to_numpy
from .multitask_runtime import Counters
from .weight_transform import weight_transform

if TYPE_CHECKING:
    from tvm_weightvirt.frontend.task import Task

InputTypes = list[tuple[tuple[int, ...], str]]


class StandaloneModel:
    """`task.mod` compiled alone with TVM's default pipeline (its kernels scheduled from the
    MetaSchedule database `tuning_db` if given), its weight-only ops run once at load; `run`
    feeds the transformed weights."""

    def __init__(
        self, task: Task, target: str | dict = "llvm", device=None, tuning_db: str | None = None
    ) -> None:
        executable, self.tuning = compile_alone(task, target, tuning_db)
        weights = list(task.weights.values())
        self._setup(task.name, executable, weights, task.input_types, device)

    @classmethod
    def load(
        cls, name: str, files: tuple[str, str], input_types: InputTypes, device=None
    ) -> StandaloneModel:
        """The model `save_alone` wrote to `files` (library, weights)."""
        model = cls.__new__(cls)
        executable, weights = _load_alone(files)
        model._setup(name, executable, weights, input_types, device)
        model.tuning = None
        return model

    def _setup(self, name, executable, weights, input_types, device) -> None:
        self.name, self.executable = name, executable
        self.device = device or tvm.cpu()
        self.vm = VirtualMachine(executable, self.device)
        self._main = self.vm["main"]
        tensors = [tvm.runtime.tensor(w, self.device) for w in weights]
        self.weights = weight_transform(self.vm, "main")(tensors)
        self.weight_bytes = sum(w.nbytes for w in weights)
        self._inputs = InputBuffers(input_types, self.device)
        self._lock = threading.Lock()

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            args = self._inputs.fill(self.name, inputs)
            return outputs_to_numpy(self._main(*args, *self.weights))


def compile_alone(task: Task, target: str | dict = "llvm", tuning_db: str | None = None):
    """`task.mod` compiled by itself (weights as inputs) with the same passes and schedules as
    a multitask build: the executable and, with `tuning_db`, the TuningReport of its kernels."""
    # compiling: TVM's compiler, not only its runtime
    from tvm_weightvirt.passes import ConvWeightsOutputChannelsLast, LiftWeightTransforms

    from tvm_weightvirt.compile.cpu_schedule import default_pipeline

    target = tvm.target.Target(target)
    mod = LiftWeightTransforms()(ConvWeightsOutputChannelsLast()(task.mod))
    pipeline, tuning = default_pipeline(target), None
    if tuning_db:
        from tvm_weightvirt.compile.tuning import TuningOptions, scheduled_pipeline, tune_and_apply

        mod, target, tuning = tune_and_apply(mod, target, TuningOptions(tuning_db))
        pipeline = scheduled_pipeline(target)
    with target:
        return tvm.compile(mod, target, relax_pipeline=pipeline), tuning


def save_alone(
    task: Task, directory: str, target: str | dict = "llvm", archs=None
) -> tuple[str, str]:
    """`task` compiled alone and saved as `<name>.so` and `<name>.safetensors` (its weights, in
    order); for cuda the library carries nvcc's machine code for `archs`. Returns the paths,
    written to disk (fsync'd, so a cold read can drop them from the page cache)."""
    os.makedirs(directory, exist_ok=True)
    executable, _ = compile_alone(task, target)
    library = os.path.join(directory, f"{task.name}.so")
    params = os.path.join(directory, f"{task.name}.safetensors")
    target = tvm.target.Target(target)
    if target.kind.name == "cuda":
        from tvm_weightvirt.compile.cuda import export_with_fatbin

        export_with_fatbin(executable, library, archs or [str(target.attrs["arch"])])
    else:
        executable.export_library(library)
    weights = {f"{i:04d}": w for i, w in enumerate(task.weights.values())}
    safetensors.numpy.save_file(weights, params)
    for path in (library, params):
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    return library, params


def _load_alone(files: tuple[str, str]):
    library, params = files
    loaded = safetensors.numpy.load_file(params)
    return tvm.runtime.load_module(library), [loaded[k] for k in sorted(loaded)]


class ResidentModels:
    """Baseline: every task compiled alone and kept in memory (fastest switch, most memory)."""

    def __init__(self, models: dict[str, StandaloneModel]) -> None:
        self.models = models
        self.current: str | None = None
        self.counters = Counters()
        self.resident_bytes = sum(m.weight_bytes for m in self.models.values())

    @classmethod
    def compile(cls, tasks: list[Task], target: str | dict = "llvm", device=None):
        return cls({t.name: StandaloneModel(t, target, device) for t in tasks})

    @classmethod
    def load(
        cls, files: dict[str, tuple[str, str]], input_types: dict[str, InputTypes], device=None
    ):
        """The models `save_alone` wrote (task -> (library, weights))."""
        return cls(
            {n: StandaloneModel.load(n, f, input_types[n], device) for n, f in files.items()}
        )

    def switch(self, task: str) -> None:
        start = time.perf_counter()
        self.current = task
        self.counters.switches += 1
        self.counters.switch_seconds += time.perf_counter() - start

    def run(self, task: str, *inputs: np.ndarray) -> list[np.ndarray]:
        if task != self.current:
            self.switch(task)
        start = time.perf_counter()
        out = self.models[task].run(*inputs)
        self.counters.requests += 1
        self.counters.inference_seconds += time.perf_counter() - start
        return out


class ReloadModels:
    """Baseline (NWV's and WS's): each task stored as a library plus a safetensors file (see
    `save_alone`); every switch drops the current task and loads the next from storage.

    `cold=True` reads storage the way a device reads flash: the files' pages are dropped from
    the OS page cache (`posix_fadvise(DONTNEED)`) before each load.
    """

    def __init__(
        self,
        files: dict[str, tuple[str, str]],
        input_types: dict[str, InputTypes],
        device=None,
        cold: bool = True,
    ) -> None:
        self.device = device or tvm.cpu()
        self.cold = cold
        self.files = files
        self._inputs = {n: InputBuffers(input_types[n], self.device) for n in files}
        self.resident_bytes = max(  # the largest task's weights, held between switches
            sum(w.nbytes for w in safetensors.numpy.load_file(params).values())
            for _, params in files.values()
        )
        self.current: str | None = None
        self.counters = Counters()
        self._vm = self._weights = None

    @classmethod
    def compile(
        cls,
        tasks: list[Task],
        directory: str,
        target: str | dict = "llvm",
        device=None,
        cold: bool = True,
    ) -> ReloadModels:
        """Each task compiled alone and saved to `directory`."""
        files = {t.name: save_alone(t, directory, target) for t in tasks}
        return cls(files, {t.name: t.input_types for t in tasks}, device, cold)

    def switch(self, task: str) -> None:
        start = time.perf_counter()
        self._vm = self._weights = None  # drop the previous task (refcounted: freed now)
        if self.cold:
            for path in self.files[task]:
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        executable, weights = _load_alone(self.files[task])
        self._vm = VirtualMachine(executable, self.device)
        tensors = [tvm.runtime.tensor(w, self.device) for w in weights]
        self._weights = weight_transform(self._vm, "main")(tensors)
        self.current = task
        self.counters.switches += 1
        self.counters.switch_seconds += time.perf_counter() - start
        self.counters.bytes_gathered += sum(os.path.getsize(p) for p in self.files[task])

    def run(self, task: str, *inputs: np.ndarray) -> list[np.ndarray]:
        if task != self.current:
            self.switch(task)
        start = time.perf_counter()
        args = self._inputs[task].fill(task, inputs)
        out = outputs_to_numpy(self._vm["main"](*args, *self._weights))
        self.counters.requests += 1
        self.counters.inference_seconds += time.perf_counter() - start
        return out
