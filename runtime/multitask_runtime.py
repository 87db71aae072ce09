"""Run any task of a compiled multitask library over a resident page pool, switching in memory."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_weightvirt.compiler import Library
from tvm_weightvirt.passes.add_page_gather import GATHER_FUNC
from tvm_weightvirt.plan import PagePlan

from .scheduler import schedule

ALIGN_BYTES = 64  # what TVM accepts for a zero-copy tensor


@dataclass
class Counters:
    requests: int = 0
    switches: int = 0
    bytes_gathered: int = 0
    switch_seconds: float = 0.0
    inference_seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class MultitaskRuntime:
    """The pool and page tables made resident once; `switch(task)` gathers the task's pages into
    one weight buffer sized for the largest task, whose views are the task's weights
    (materialize mode), or does nothing (fused mode); `run(task, *inputs)` switches if needed
    and runs.

    Thread safety: one lock. Concurrent `run` calls are served one at a time, each with the
    weights of its own task (a switch and the run that needs it never interleave with another
    thread's).
    """

    def __init__(self, plan: PagePlan, library: Library, device: tvm.runtime.Device | None = None):
        self.device = device or tvm.cpu()
        self.library = library
        _check_belongs(plan, library)
        self.vm = relax.VirtualMachine(library.executable, self.device)
        self.pool = tvm.runtime.tensor(plan.pool, self.device)
        self.page_tables = {
            name: tvm.runtime.tensor(t.page_table, self.device) for name, t in plan.tasks.items()
        }
        self.counters = Counters()
        self.current: str | None = None
        self._lock = threading.RLock()
        self._functions = {name: self.vm[f"task_{name}"] for name in plan.tasks}
        if library.mode == "materialize":
            if self.device.dlpack_device_type() != tvm.cpu().dlpack_device_type():
                raise NotImplementedError(
                    f"materialize mode on {self.device} needs device-side weight views, which "
                    "are not implemented yet: use fused mode there")
            self._gather = self.vm.module.get_function(GATHER_FUNC, True)
            self._setup_weight_buffer(plan)

    def _setup_weight_buffer(self, plan: PagePlan) -> None:
        """One 64-byte aligned host buffer for the largest task; per task, the views of it that
        are its page-shaped gather target and its weights (zero-copy, created once)."""
        page_size = plan.page_size
        max_pages = max(t.layout.n_pages for t in plan.tasks.values())
        raw = np.zeros(max_pages * page_size + ALIGN_BYTES // 4, np.float32)
        start = (-raw.ctypes.data % ALIGN_BYTES) // 4
        self.weight_buffer = raw[start : start + max_pages * page_size]
        self.weight_buffer_bytes = self.weight_buffer.nbytes
        self._targets, self._weights, self._target_bytes = {}, {}, {}
        for name, t in plan.tasks.items():
            pages = self.weight_buffer[: t.layout.n_pages * page_size]
            self._target_bytes[name] = pages.nbytes
            self._targets[name] = tvm.runtime.from_dlpack(pages.reshape(t.layout.n_pages, page_size))
            self._weights[name] = [
                tvm.runtime.from_dlpack(self.weight_buffer[s.offset_elems : s.end_elems].reshape(s.shape))
                for s in t.layout.spans
            ]

    @property
    def resident_bytes(self) -> int:
        """Weight memory held: pool + page tables (+ the materialized weight buffer)."""
        tables = sum(t.numpy().nbytes for t in self.page_tables.values())
        buffer = self.weight_buffer_bytes if self.library.mode == "materialize" else 0
        return self.pool.numpy().nbytes + tables + buffer

    def switch(self, task: str) -> None:
        """Make `task` current: in materialize mode, one gather kernel moves its pages."""
        with self._lock:
            self._check_task(task)
            start = time.perf_counter()
            if self.library.mode == "materialize":
                self._gather(self.pool, self.page_tables[task], self._targets[task])
                self.counters.bytes_gathered += self._target_bytes[task]
            self.current = task
            self.counters.switches += 1
            self.counters.switch_seconds += time.perf_counter() - start

    def run(self, task: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs of `task` on `inputs` (numpy arrays in the model's input order)."""
        with self._lock:
            self._check_task(task)
            args = self._check_inputs(task, inputs)
            if task != self.current:
                self.switch(task)
            start = time.perf_counter()
            if self.library.mode == "materialize":
                result = self._functions[task](*args, *self._weights[task])
            else:
                result = self._functions[task](*args, self.pool, self.page_tables[task])
            outputs = outputs_to_numpy(result)
            self.counters.requests += 1
            self.counters.inference_seconds += time.perf_counter() - start
            return outputs

    def run_many(self, requests: list[tuple[str, tuple]], policy: str = "fifo",
                 max_wait: int = 8) -> list[list[np.ndarray]]:
        """Serve a queue of `(task, inputs)` in the order `policy` chooses (see `schedule`);
        outputs come back in request order."""
        order = schedule([task for task, _ in requests], policy, max_wait, self.current)
        outputs: list = [None] * len(requests)
        for i in order:
            task, inputs = requests[i]
            outputs[i] = self.run(task, *inputs)
        return outputs

    def _check_task(self, task: str) -> None:
        if task not in self._functions:
            raise KeyError(f"no task '{task}' in this runtime (has {sorted(self._functions)})")

    def _check_inputs(self, task: str, inputs: tuple) -> list:
        expected = self.library.tasks[task].inputs
        if len(inputs) != len(expected):
            raise ValueError(f"task '{task}' takes {len(expected)} inputs, got {len(inputs)}")
        args = []
        for i, (x, (shape, dtype)) in enumerate(zip(inputs, expected)):
            x = np.asarray(x)
            if tuple(x.shape) != shape or str(x.dtype) != dtype:
                raise ValueError(f"task '{task}': input {i} must be {shape} {dtype}, "
                                 f"got {tuple(x.shape)} {x.dtype}")
            args.append(tvm.runtime.tensor(np.ascontiguousarray(x), self.device))
        return args


def _check_belongs(plan: PagePlan, library: Library) -> None:
    """The library was lowered from this plan's tasks and layouts, or say where they differ."""
    problems = []
    if sorted(plan.tasks) != sorted(library.tasks):
        problems.append(f"plan tasks {sorted(plan.tasks)} != library tasks {sorted(library.tasks)}")
    for name in sorted(set(plan.tasks) & set(library.tasks)):
        layout, signature = plan.task(name).layout, library.tasks[name]
        if library.mode == "materialize":
            if [(s.shape, s.dtype) for s in layout.spans] != list(signature.weights):
                problems.append(f"task '{name}': the library's weights are not the plan's layout")
        elif (signature.n_pages, signature.pool_shape) != (layout.n_pages, plan.pool.shape):
            problems.append(
                f"task '{name}': library expects {signature.n_pages} pages of a "
                f"{signature.pool_shape} pool, plan has {layout.n_pages} of {plan.pool.shape}")
    if problems:
        raise ValueError("library and page plan do not belong together: " + "; ".join(problems))


def outputs_to_numpy(result) -> list[np.ndarray]:
    """A VM result (a tensor or nested tuples of tensors) as a flat list of numpy arrays."""
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    out = []
    for item in result:
        out.extend(outputs_to_numpy(item))
    return out
