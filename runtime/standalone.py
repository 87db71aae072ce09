"""One task compiled alone by plain TVM, its weights passed as inputs (the reference), and the
two baselines built from it: all models resident, or each reloaded from storage per switch."""

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

if TYPE_CHECKING:
    from tvm_weightvirt.frontend.task import Task


class StandaloneModel:
    """`task.mod` compiled alone with TVM's default pipeline (its kernels scheduled from the
    MetaSchedule database `tuning_db` if given); `run` feeds the task's weights."""

    def __init__(
        self, task: Task, target: str | dict = "llvm", device=None, tuning_db: str | None = None
    ) -> None:
        from tvm import relax  # compiling: TVM's compiler, not only its runtime

        target = tvm.target.Target(target)
        self.device = device or tvm.cpu()
        mod, pipeline, self.tuning = task.mod, relax.get_default_pipeline(target), None
        if tuning_db:
            from tvm_weightvirt.compile.tuning import (
                TuningOptions,
                scheduled_pipeline,
                tune_and_apply,
            )

            mod, target, self.tuning = tune_and_apply(mod, target, TuningOptions(tuning_db))
            pipeline = scheduled_pipeline(target)
        with target:
            self.executable = tvm.compile(mod, target, relax_pipeline=pipeline)
        self.vm = VirtualMachine(self.executable, self.device)
        self.weights = [tvm.runtime.tensor(w, self.device) for w in task.weights.values()]
        self.weight_bytes = sum(w.nbytes for w in task.weights.values())
        self.name = task.name
        self._inputs = InputBuffers(task.input_types, self.device)
        self._lock = threading.Lock()

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            args = self._inputs.fill(self.name, inputs)
            return outputs_to_numpy(self.vm["main"](*args, *self.weights))


class ResidentModels:
    """Baseline: every task compiled alone and kept in memory (fastest switch, most memory)."""

    def __init__(self, tasks: list[Task], target: str | dict = "llvm", device=None) -> None:
        self.models = {t.name: StandaloneModel(t, target, device) for t in tasks}
        self.current: str | None = None
        self.counters = Counters()
        self.resident_bytes = sum(m.weight_bytes for m in self.models.values())

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
    """Baseline (NWV's and WS's): each task compiled alone and stored as a library plus a
    safetensors file; every switch drops the current task and loads the next from storage.

    `cold=True` reads storage the way a device reads flash: the files' pages are dropped from
    the OS page cache (`posix_fadvise(DONTNEED)`) before each load.
    """

    def __init__(
        self,
        tasks: list[Task],
        directory: str,
        target: str | dict = "llvm",
        device=None,
        cold: bool = True,
    ) -> None:
        self.device = device or tvm.cpu()
        self.cold = cold
        self.files, self._inputs = {}, {}
        os.makedirs(directory, exist_ok=True)
        for t in tasks:
            model = StandaloneModel(t, target, self.device)
            library = os.path.join(directory, f"{t.name}.so")
            params = os.path.join(directory, f"{t.name}.safetensors")
            model.executable.export_library(library)
            safetensors.numpy.save_file(
                {f"{i:04d}": w for i, w in enumerate(t.weights.values())}, params
            )
            for path in (library, params):
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())  # clean pages, so DONTNEED can drop them
            self.files[t.name] = (library, params)
            self._inputs[t.name] = InputBuffers(t.input_types, self.device)
        self.resident_bytes = max(sum(w.nbytes for w in t.weights.values()) for t in tasks)
        self.current: str | None = None
        self.counters = Counters()
        self._vm = self._weights = None

    def switch(self, task: str) -> None:
        start = time.perf_counter()
        self._vm = self._weights = None  # drop the previous task (refcounted: freed now)
        library, params = self.files[task]
        if self.cold:
            for path in (library, params):
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        self._vm = VirtualMachine(tvm.runtime.load_module(library), self.device)
        loaded = safetensors.numpy.load_file(params)
        self._weights = [tvm.runtime.tensor(loaded[k], self.device) for k in sorted(loaded)]
        self.current = task
        self.counters.switches += 1
        self.counters.switch_seconds += time.perf_counter() - start
        self.counters.bytes_gathered += sum(os.path.getsize(p) for p in (library, params))

    def run(self, task: str, *inputs: np.ndarray) -> list[np.ndarray]:
        if task != self.current:
            self.switch(task)
        start = time.perf_counter()
        args = self._inputs[task].fill(task, inputs)
        out = outputs_to_numpy(self._vm["main"](*args, *self._weights))
        self.counters.requests += 1
        self.counters.inference_seconds += time.perf_counter() - start
        return out
