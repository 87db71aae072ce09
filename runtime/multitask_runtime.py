"""Run any task of a compiled multitask library over a resident page pool, switching in memory."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine

from tvm_weightvirt.abi import (
    CODED_EXCLUSIVE_GATHER_FUNC,
    CODED_GATHER_FUNC,
    EXCLUSIVE_GATHER_FUNC,
    GATHER_FUNC,
    task_function,
)
from tvm_weightvirt.compile.library import Library
from tvm_weightvirt.plan import PagePlan

from .device_memory import (
    CPU,
    address_view,
    as_numpy,
    check_device,
    host_staging,
    offset_view,
)
from .io import InputBuffers, on_cpu, outputs_to_numpy
from .page_mapping import MappedRange, SharedPages, mapping_problems
from .page_store import PageStore
from .scheduler import schedule
from .weight_transform import weight_transform


@dataclass
class Counters:
    requests: int = 0
    switches: int = 0
    bytes_gathered: int = 0
    bytes_transformed: int = 0  # weights a task's weight transform wrote at a switch
    bytes_read_l2: int = 0  # exclusive pages read from level-2 storage
    prefetch_hits: int = 0  # switches whose exclusive pages were already prefetched
    switch_seconds: float = 0.0
    inference_seconds: float = 0.0


class MultitaskRuntime:
    """The pool and page tables made resident once; `switch(task)` gathers the task's pages into
    one weight buffer sized for the largest task, whose views are the task's weights, and runs
    the task's weight-only ops on them once (materialize mode), or does nothing (fused mode);
    `run(task, *inputs)` switches if needed and runs.

    `mapped=True` (a materialize library on the CPU, Linux, pages a multiple of the OS page):
    no weight buffer; each task's pages are mapped once into a virtual range of their own
    (`page_mapping`), whose views are its weights, and a switch only picks that range: it
    moves no weight bytes when the tasks were packed in kernel layout
    (`Task.in_kernel_layout()`, no weight transform left), and the kernels are materialize
    mode's, reading plain dense weights.

    Exclusive pages (weight separation) stay in level-2 storage (`level2`: the .wvpack file, or
    the plan's arrays) until a switch loads them into a level-1 scratch; `run_many` prefetches
    the next task's exclusive pages on a background thread while the current task runs. On a
    GPU the pages are read into page-locked host memory and copied to a device scratch.

    The same holds on the CPU and on a GPU (`device=tvm.cuda()`): pool, page tables, weight
    buffer and scratches live on the device, and the weights are views of the weight buffer.

    Thread safety: one lock. Concurrent `run` calls are served one at a time, each with the
    weights of its own task (a switch and the run that needs it never interleave with another
    thread's). The prefetch thread writes only the prefetch scratch, which a switch reads only
    after the prefetch has finished.
    """

    def __init__(
        self,
        plan: PagePlan,
        library: Library,
        device: tvm.runtime.Device | None = None,
        level2: str | None = None,
        mapped: bool = False,
    ):
        self.device = device or tvm.cpu()
        self.library = library
        self.mapped = mapped
        _check_belongs(plan, library)
        check_device(library, self.device)
        if mapped:
            _check_mappable(plan, library, self.device)
        self.vm = VirtualMachine(library.executable, self.device)
        if mapped:  # the pool lives in shared memory that the tasks' ranges map
            self.pool, self._pool_inputs = None, ()
        elif plan.coded is None:
            self.pool = tvm.runtime.tensor(plan.pool, self.device)
            self._pool_inputs = (self.pool,)
        else:  # SmartDeal pages: codes and bases stay resident, a switch decodes
            self.pool = None
            coded = (plan.coded.packed, plan.coded.bases)
            self._pool_inputs = tuple(tvm.runtime.tensor(a, self.device) for a in coded)
        self.page_tables = {
            name: tvm.runtime.tensor(plan.stored_page_table(name), self.device)
            for name in plan.tasks
        }
        self._pool_and_table_bytes = plan.pool_bytes + plan.page_table_bytes
        self.counters = Counters()
        self.current: str | None = None
        self._lock = threading.RLock()
        self._functions = {name: self.vm[task_function(name)] for name in plan.tasks}
        self._inputs = {
            name: InputBuffers(library.tasks[name].inputs, self.device) for name in plan.tasks
        }
        if library.mode == "materialize":
            gather = GATHER_FUNC if plan.coded is None else CODED_GATHER_FUNC
            self._gather = self._kernel(gather)
            if self._gather is None:
                pools = ("float32 pages", "SmartDeal pages")
                ours, theirs = pools[::-1] if plan.coded is not None else pools
                raise ValueError(
                    f"library and page plan do not belong together: the plan's pool is {ours}, "
                    f"the library was lowered for {theirs} (it has no '{gather}')"
                )
            self._transforms = {n: weight_transform(self.vm, task_function(n)) for n in plan.tasks}
            self._transformed_bytes: dict[str, int] = {}
        self._arguments: list[tvm.runtime.Tensor] = []  # the current task's, after its inputs
        self._reading_slot: int | None = None  # exclusive scratch slot the current task reads
        self.weight_buffer_bytes = 0  # materialize mode's buffer, when not mapped
        self._setup_exclusive(plan, level2)
        if mapped:
            self._setup_mapped_ranges(plan)
        elif library.mode == "materialize":
            self._setup_weight_buffer(plan)

    def _kernel(self, name: str):
        """The library's compiled function `name`, or None."""
        module = self.vm.module
        return module.get_function(name, True) if module.implements_function(name, True) else None

    def _setup_exclusive(self, plan: PagePlan, level2: str | None) -> None:
        """Two level-1 scratch slots for exclusive pages, each sized for the largest task's: a
        switch reads level 2 into one no prefetch is filling, a prefetch into one the current
        task does not read in place (mapped); off the CPU, each with a host staging buffer that
        level 2 is read into. A scratch is one buffer per stored part: float32 pages, or
        (SmartDeal pages) packed codes and bases, which the gather decodes."""
        self._exclusive_counts = {n: t.n_exclusive_pages for n, t in plan.tasks.items()}
        most = max(self._exclusive_counts.values())
        self.scratch_bytes = 0
        if most == 0:
            return
        self.store = PageStore(plan, level2)
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wv-prefetch")
        self._prefetched: tuple[str, int, Future] | None = None
        if self.mapped:  # the scratch is shared memory the tasks' ranges map in place
            self._exclusive_pages = SharedPages(2 * most, 4 * plan.page_size, "wv-exclusive")
            pages = self._exclusive_pages.array
            self._staging_arrays = [[pages[:most]], [pages[most:]]]
            self.scratch_bytes = pages.nbytes
            return
        loader = EXCLUSIVE_GATHER_FUNC if plan.coded is None else CODED_EXCLUSIVE_GATHER_FUNC
        self._gather_exclusive = self._kernel(loader)
        if self._gather_exclusive is None:
            raise ValueError(
                f"the plan has exclusive pages but the library has no '{loader}' (lower it "
                "from this plan)"
            )
        parts = self.store.shapes(most)

        def slots(make):  # two slots, each a buffer per stored part
            return [[make(shape, dtype) for shape, dtype in parts] for _ in range(2)]

        scratch = slots(lambda shape, dtype: tvm.runtime.empty(shape, dtype, self.device))
        staging = (
            scratch
            if on_cpu(self.device)
            else slots(lambda shape, dtype: host_staging(shape, self.device, dtype))
        )
        self._scratch, self._staging = scratch, staging  # the views below need these alive
        self._staging_arrays = [[as_numpy(t) for t in slot] for slot in staging]
        self.scratch_bytes = 2 * sum(a.nbytes for a in self._staging_arrays[0])

        def views(slots):  # per slot, per task: its pages' view of each part
            return [
                {
                    n: [offset_view(b, 0, (e, *b.shape[1:]), b.dtype) for b in slot]
                    for n, e in self._exclusive_counts.items()
                    if e
                }
                for slot in slots
            ]

        self._scratch_views = views(scratch)
        self._staging_views = None if on_cpu(self.device) else views(staging)

    def _setup_mapped_ranges(self, plan: PagePlan) -> None:
        """The pool in shared memory; per task and exclusive scratch slot, a virtual range
        whose pages are the task's (pool pages, or its exclusive pages in that slot), the
        views of it that are the task's weights, and the task function's arguments when its
        weight transform (if any) only reshapes them: views of the range too, made once."""
        page_bytes, n_pool = 4 * plan.page_size, plan.n_pool_pages
        self._pool_pages = SharedPages(n_pool, page_bytes, "wv-pool")
        self._pool_pages.array[:] = plan.pool
        most = max(self._exclusive_counts.values())
        self._ranges: dict[str, list[_TaskRange]] = {}
        for name, t in plan.tasks.items():
            self._ranges[name] = []
            for slot in range(2 if t.n_exclusive_pages else 1):
                sources = [
                    (self._pool_pages, int(v))
                    if v < n_pool
                    else (self._exclusive_pages, slot * most + int(v) - n_pool)
                    for v in t.page_table
                ]
                pages = MappedRange(sources)
                weights = [
                    address_view(pages.address + 4 * s.offset_elems, s.shape, s.dtype)
                    for s in t.layout.spans
                ]
                arguments = self._transforms[name](weights)
                views = _written_bytes(weights, arguments) == 0
                self._ranges[name].append(_TaskRange(pages, weights, arguments if views else None))

    def _setup_weight_buffer(self, plan: PagePlan) -> None:
        """One weight buffer on the device for the largest task; per task, the views of it that
        are its page-shaped gather target and its weights (zero-copy, created once; the layout
        aligns every weight to 64 bytes)."""
        page_size = plan.page_size
        # at least one page: an empty buffer has no aligned address (tasks without weights)
        max_pages = max(1, *(t.layout.n_pages for t in plan.tasks.values()))
        self.weight_buffer = tvm.runtime.empty((max_pages * page_size,), "float32", self.device)
        self.weight_buffer_bytes = max_pages * page_size * 4
        self._targets, self._weights, self._target_bytes = {}, {}, {}
        for name, t in plan.tasks.items():
            shape = (t.layout.n_pages, page_size)
            self._target_bytes[name] = t.layout.n_pages * page_size * 4
            self._targets[name] = offset_view(self.weight_buffer, 0, shape)
            self._weights[name] = [
                offset_view(self.weight_buffer, 4 * s.offset_elems, s.shape, s.dtype)
                for s in t.layout.spans
            ]

    @property
    def resident_bytes(self) -> int:
        """Level-1 weight memory held: pool + page tables (+ the materialized weight buffer and
        the exclusive-page scratches)."""
        return self._pool_and_table_bytes + self.weight_buffer_bytes + self.scratch_bytes

    def switch(self, task: str) -> None:
        """Make `task` current: in materialize mode, one gather kernel moves its pages and the
        task's weight transform runs on them; mapped, the task's range (for the scratch slot
        its exclusive pages were read into) becomes current."""
        with self._lock:
            self._check_task(task)
            start = time.perf_counter()
            slot = self._exclusive_slot(task) if self._exclusive_counts[task] else None
            self._reading_slot = slot if self.mapped else None
            if self.library.mode == "fused":
                self._arguments = [self.pool, self.page_tables[task]]
            elif self.mapped and self._ranges[task][slot or 0].arguments is not None:
                self._arguments = self._ranges[task][slot or 0].arguments
            else:
                if self.mapped:
                    weights = self._ranges[task][slot or 0].weights
                else:
                    self._gather_pages(task, slot)
                    weights = self._weights[task]
                self._arguments = self._transforms[task](weights)
                self.counters.bytes_transformed += self._fresh_bytes(task, weights)
            self.current = task
            self.counters.switches += 1
            self.counters.switch_seconds += time.perf_counter() - start

    def _gather_pages(self, task: str, slot: int | None) -> None:
        """Materialize mode: the task's pages (pool, and exclusive from scratch `slot`) into
        the weight buffer."""
        if slot is None:
            self._gather(*self._pool_inputs, self.page_tables[task], self._targets[task])
        else:
            exclusive = self._scratch_views[slot][task]
            self._gather_exclusive(
                *self._pool_inputs, *exclusive, self.page_tables[task], self._targets[task]
            )
        self.counters.bytes_gathered += self._target_bytes[task]

    def _fresh_bytes(self, task: str, weights: list[tvm.runtime.Tensor]) -> int:
        """Bytes of the arguments the task's weight transform wrote (not its weights passed
        through); the same at every switch, measured at the first."""
        if task not in self._transformed_bytes:
            self._transformed_bytes[task] = _written_bytes(weights, self._arguments)
        return self._transformed_bytes[task]

    def _exclusive_slot(self, task: str) -> int:
        """The scratch slot holding the task's exclusive pages: the finished prefetch's if it
        was for this task, else a slot no prefetch is filling, read now from level 2."""
        if self._prefetched is not None and self._prefetched[0] == task:
            _, slot, future = self._prefetched
            self._prefetched = None
            self.counters.bytes_read_l2 += future.result()  # re-raises a failed read
            self.counters.prefetch_hits += 1
            return slot
        slot = 1 if self._prefetched is not None and self._prefetched[1] == 0 else 0
        self.counters.bytes_read_l2 += self._load_exclusive(task, slot)
        return slot

    def _load_exclusive(self, task: str, slot: int) -> int:
        """Read `task`'s exclusive pages from level 2 into scratch `slot`; returns the bytes
        read. Off the CPU the read lands in page-locked staging and is copied to the device
        scratch, finished before this returns."""
        n_bytes = self.store.load(task, self._staging_arrays[slot])
        if not on_cpu(self.device):
            for view, staged in zip(
                self._scratch_views[slot][task], self._staging_views[slot][task]
            ):
                view.copyfrom(staged)
            self.device.sync()  # the staging buffer is free again, the scratch is ready
        return n_bytes

    def prefetch(self, task: str) -> Future | None:
        """Start reading `task`'s exclusive pages into the prefetch scratch in the background;
        returns the read's future (None for a task without exclusive pages)."""
        with self._lock:
            self._check_task(task)
            if not self._exclusive_counts[task]:
                return None
            if self._prefetched is not None:
                if self._prefetched[0] == task:
                    return self._prefetched[2]
                self._prefetched[2].exception()  # wait: the scratch is about to be reused
            # not the slot the current task reads in place (mapped)
            slot = 1 - self._reading_slot if self._reading_slot is not None else 1
            future = self._prefetcher.submit(self._load_exclusive, task, slot)
            self._prefetched = (task, slot, future)
            return future

    def run(self, task: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs of `task` on `inputs` (numpy arrays in the model's input order)."""
        with self._lock:
            buffers = self._inputs.get(task)
            if buffers is None:
                self._check_task(task)
            args = buffers.fill(task, inputs)
            if task != self.current:
                self.switch(task)
            start = time.perf_counter()
            outputs = outputs_to_numpy(self._functions[task](*args, *self._arguments))
            counters = self.counters
            counters.requests += 1
            counters.inference_seconds += time.perf_counter() - start
            return outputs

    def run_many(
        self, requests: list[tuple[str, tuple]], policy: str = "fifo", max_wait: int = 8
    ) -> list[list[np.ndarray]]:
        """Serve a queue of `(task, inputs)` in the order `policy` chooses (see `schedule`);
        outputs come back in request order."""
        order = schedule([task for task, _ in requests], policy, max_wait, self.current)
        tasks = [requests[i][0] for i in order]
        outputs: list = [None] * len(requests)
        for k, i in enumerate(order):
            if tasks[k] != self.current:
                self.switch(tasks[k])  # consumes a prefetch made for this task
            upcoming = next((t for t in tasks[k + 1 :] if t != tasks[k]), None)
            if upcoming is not None and self._exclusive_counts[upcoming]:
                self.prefetch(upcoming)  # read level 2 while tasks[k] runs
            outputs[i] = self.run(tasks[k], *requests[i][1])
        return outputs

    def _check_task(self, task: str) -> None:
        if task not in self._functions:
            raise KeyError(f"no task '{task}' in this runtime (has {sorted(self._functions)})")


def _written_bytes(weights: list[tvm.runtime.Tensor], arguments: list[tvm.runtime.Tensor]) -> int:
    """Bytes of the `arguments` a weight transform wrote: those that are not `weights` (or
    views of them) passed through."""
    given = {w.data_ptr() for w in weights}
    return sum(
        int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
        for a in arguments
        if a.data_ptr() not in given
    )


@dataclass
class _TaskRange:
    """A task's pages mapped (for one exclusive scratch slot), its weights as views of them,
    and the task function's arguments if they are views too (else None: its weight transform
    writes new tensors, at every switch)."""

    pages: MappedRange
    weights: list[tvm.runtime.Tensor]
    arguments: list[tvm.runtime.Tensor] | None


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
                f"{signature.pool_shape} pool, plan has {layout.n_pages} of {plan.pool.shape}"
            )
    plan_format = plan.coded.format if plan.coded is not None else None
    if plan_format and library.code_format and plan_format != library.code_format:
        problems.append(
            f"the plan's codes are stored as {plan_format}, the library decodes "
            f"{library.code_format}"
        )
    if problems:
        raise ValueError("library and page plan do not belong together: " + "; ".join(problems))


def _check_mappable(plan: PagePlan, library: Library, device: tvm.runtime.Device) -> None:
    """The plan's pages can be mapped for this library on this device, or say what is needed."""
    problems = mapping_problems(4 * plan.page_size)
    if library.mode != "materialize":
        problems.append(
            f"the library was lowered in {library.mode} mode; mapped pages need materialize "
            "mode's kernels, which take the weights as arguments"
        )
    if plan.coded is not None:
        problems.append("the plan's pages are SmartDeal-coded; only float32 pages can be mapped")
    if device.dlpack_device_type() != CPU:
        problems.append(f"mapped pages are host memory, the device is {device}")
    if problems:
        raise ValueError("cannot map the plan's pages: " + "; ".join(problems))
