"""The static executor of one task: its kernel calls in order, its tensors, intermediates placed
in one arena, and the C that runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ...compile.fusion import legalize_and_fuse
from ...passes.read_weights_through_pages import (
    PAGE_TABLE_DTYPE,
    paged_name,
    reads_per_element,
    row_split,
)
from ...plan import PagePlan
from .templates import c_ints, render

# Legalize and fuse, weights kept as parameters: they come from the gathered weight buffer.
KERNEL_PIPELINE = tvm.transform.Sequential(
    [
        # Linear layers read W in place (x @ W.T), not a transposed copy in the arena.
        relax.transform.FuseTransposeMatmul(),
        *legalize_and_fuse(),
        relax.transform.DeadCodeElimination(),
    ],
    name="wv.mcu_kernels",
)


@dataclass
class Tensor:
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "input" | "weight" | "constant" | "arena" | "output"
    index: int  # input/weight/constant/output: its position; arena: its byte offset
    first: int = 0  # arena: the call that writes it
    last: int = 0  # arena: the last call that reads it

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * tvm.DataType(self.dtype).bits // 8


@dataclass
class Executor:
    tensors: list[Tensor]
    calls: list[tuple[str, list[int]]]  # kernel symbol, tensor ids (inputs then output)
    arena_bytes: int
    constants: list[np.ndarray]  # the graph's constants (a take's indices), by position

    def constant_words(self, k: int) -> np.ndarray:
        """Constant `k`'s bytes as uint32 words (zero-padded): its C array in flash."""
        raw = np.ascontiguousarray(self.constants[k]).reshape(-1).view(np.uint8)
        return np.pad(raw, (0, -len(raw) % 4)).view(np.uint32)

    def of_kind(self, kind: str) -> list[int]:
        return sorted(
            (i for i, t in enumerate(self.tensors) if t.kind == kind),
            key=lambda i: self.tensors[i].index,
        )

    def weight_positions(self, args: list[int]) -> tuple[int, ...]:
        """The positions of a call's arguments that are weights."""
        return tuple(k for k, i in enumerate(args) if self.tensors[i].kind == "weight")


# A kernel that reads each weight element this many times or more (a convolution: once per
# output position) gets the weight gathered from its pages into a scratch before each call,
# a memcpy per page, instead of paying the page-table arithmetic on every read.
GATHER_AT_READS = 2.0
# So does a weight of at most this many elements that no row of divides the page size (its
# page would be found per element): a memcpy per page costs less than that.
GATHER_UNALIGNED_ELEMS = 4096


@dataclass
class ZeroCopyReads:
    """How each kernel reads each weight parameter in a zero-copy build: "paged" (in place,
    through its page table) or "gathered" (copied from its pages into `wv_scratch` before the
    call; SmartDeal-coded pages are decoded into it, whole pages, so a coded plan's weights
    are all gathered); and the length of the page storage both read from."""

    how: dict[str, dict[int, str]]  # kernel -> weight position -> "paged" | "gathered"
    n_page_elems: int  # the pool, then every task's exclusive pages
    page_size: int
    decoded: bool  # SmartDeal pages: gathering decodes whole pages

    @staticmethod
    def choose(executors, kernels: tvm.IRModule, plan: PagePlan) -> ZeroCopyReads:
        how: dict[str, dict[int, str]] = {}
        for e in executors:
            for symbol, args in e.calls:
                for k in e.weight_positions(args):
                    if k in how.get(symbol, {}):  # the kernel's parameter, already chosen
                        continue
                    weight = e.tensors[args[k]]
                    unaligned = row_split(weight.shape, plan.page_size) == len(weight.shape)
                    gather = (
                        plan.coded is not None
                        or reads_per_element(kernels[symbol], k) >= GATHER_AT_READS
                        or (unaligned and weight.numel <= GATHER_UNALIGNED_ELEMS)
                    )
                    how.setdefault(symbol, {})[k] = "gathered" if gather else "paged"
        n_pages = plan.n_pool_pages + sum(t.n_exclusive_pages for t in plan.tasks.values())
        return ZeroCopyReads(how, n_pages * plan.page_size, plan.page_size, plan.coded is not None)

    @property
    def any_paged(self) -> bool:
        return any(way == "paged" for ways in self.how.values() for way in ways.values())

    def slot_elems(self, numel: int) -> int:
        """The scratch a gathered weight of `numel` takes: 16-aligned, or whole pages when
        decoded."""
        if self.decoded:
            return -(-numel // self.page_size) * self.page_size
        return _aligned(numel)

    def positions(self, e: Executor, symbol: str, args: list[int], way: str) -> tuple[int, ...]:
        """The positions of a call's weights that the kernel reads `way`."""
        return tuple(k for k in e.weight_positions(args) if self.how[symbol][k] == way)

    def uses(self, executors) -> dict[str, set[tuple[int, ...]]]:
        """Kernel -> the paged positions of each of its calls (`ReadWeightsThroughPages`)."""
        uses: dict[str, set[tuple[int, ...]]] = {}
        for e in executors:
            for symbol, args in e.calls:
                uses.setdefault(symbol, set()).add(self.positions(e, symbol, args, "paged"))
        return uses

    def scratch_elems(self, executors) -> int:
        """The scratch the gathered weights of the largest call need (each 16-aligned)."""
        return max(
            [1]
            + [
                sum(
                    self.slot_elems(e.tensors[args[k]].numel)
                    for k in self.positions(e, symbol, args, "gathered")
                )
                for e in executors
                for symbol, args in e.calls
            ]
        )


def _aligned(n: int, align: int = 16) -> int:
    return -(-n // align) * align


def task_executor(name: str, func: relax.Function) -> Executor:
    """The kernel calls of `task_<name>` in order, and its tensors with intermediates placed in
    one arena (a buffer is reused once its last reader has run)."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    n_in = int(func.attrs["num_input"])
    tensors, ids, tuples, calls, constants = [], {}, {}, [], []
    for i, param in enumerate(func.params):
        ids[param] = len(tensors)
        tensors.append(
            Tensor(*_shape_dtype(param), *(("input", i) if i < n_in else ("weight", i - n_in)))
        )

    def tensor_of(expr: relax.Expr) -> int | None:
        """The tensor id of a kernel argument or tuple field: a binding's, or a constant's
        (each a C array in flash)."""
        if isinstance(expr, tvm.ir.GenericConst):
            ids[expr] = len(tensors)
            tensors.append(Tensor(*_shape_dtype(expr), "constant", len(constants)))
            constants.append(expr.value.numpy())
        return ids.get(expr)

    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, tvm.ir.GenericConst):
                ids[binding.var] = tensor_of(value)
            elif isinstance(value, relax.Call) and value.op == call_tir:
                args = [tensor_of(a) for a in value.args[1].fields]
                for a in args:
                    tensors[a].last = len(calls)
                fields = binding.var.ty.fields if _is_tuple(binding.var) else [binding.var.ty]
                results = list(range(len(tensors), len(tensors) + len(fields)))
                for ty in fields:  # a kernel of several outputs (split) writes each
                    tensors.append(Tensor(*_shape_dtype(ty), "arena", 0, len(calls), len(calls)))
                if _is_tuple(binding.var):
                    tuples[binding.var] = results
                else:
                    ids[binding.var] = results[0]
                calls.append((value.args[0].name_hint, [*args, *results]))
            elif isinstance(value, relax.TupleGetItem) and value.tuple_value in tuples:
                ids[binding.var] = tuples[value.tuple_value][int(value.index)]
            elif isinstance(value, relax.Tuple) and all(
                isinstance(f, tvm.ir.GenericConst) or f in ids for f in value.fields
            ):
                tuples[binding.var] = [tensor_of(f) for f in value.fields]
            else:  # e.g. an op TVM has no C kernel for (it legalizes no topk, no sort)
                what = getattr(value, "op", None)
                what = getattr(what, "name", None) or type(value).__name__
                raise ValueError(
                    f"task '{name}': the MCU executor runs only kernel calls; "
                    f"`{binding.var.name} = {what}` is not one"
                )
    result = func.body.body
    outputs = tuples.get(result) or ([ids[result]] if result in ids else [])
    if not outputs or any(tensors[o].kind != "arena" for o in outputs):
        raise ValueError(
            f"task '{name}': the MCU executor runs only kernel calls returning fresh tensors; "
            "an output is an input or a weight"
        )
    for k, o in enumerate(outputs):
        tensors[o].kind, tensors[o].index = "output", k
    return Executor(tensors, calls, place_in_arena(tensors), constants)


def place_in_arena(tensors: list[Tensor], align: int = 16) -> int:
    """First fit, largest first: each intermediate at the lowest offset that no tensor alive at
    the same time uses. Returns the arena's size in bytes."""
    placed: list[Tensor] = []
    for t in sorted((t for t in tensors if t.kind == "arena"), key=lambda t: -t.nbytes):
        offset = 0
        for other in sorted(placed, key=lambda o: o.index):
            if other.last < t.first or t.last < other.first:
                continue  # not alive together
            if offset + t.nbytes > other.index and other.index + other.nbytes > offset:
                offset = -(-(other.index + other.nbytes) // align) * align
        t.index = offset
        placed.append(t)
    return max((t.index + t.nbytes for t in placed), default=0)


def _shape_dtype(expr: relax.Expr | relax.TensorType) -> tuple[tuple[int, ...], str]:
    ty = expr if isinstance(expr, relax.TensorType) else expr.ty
    return tuple(int(d) for d in ty.shape.values), str(ty.dtype)


def _is_tuple(var: relax.Var) -> bool:
    return isinstance(var.ty, relax.TupleType)


def executor_c(
    executors: dict[str, Executor],
    plan: PagePlan,
    packed: bool,
    zero_copy: ZeroCopyReads | None = None,
    pool_in: str = "ram",
) -> str:
    """The C of every task's executor. A weight is a view of the weight buffer (packed), of the
    task's dense weights (not packed), or, zero-copy, either the slice of the task's page table
    that lists its pages, passed beside the page storage `wv_pages` (paged), or a view of
    `wv_scratch` that its pages are copied into before the call (gathered)."""
    calls = {
        task: [(_symbol(e, s, args, zero_copy), args) for s, args in e.calls]
        for task, e in executors.items()
    }
    lines = [render("executor_head")]
    if zero_copy:
        lines.append(render("pages_decl", const="const " if pool_in == "flash" else ""))
    symbols = sorted({s for task_calls in calls.values() for s, _ in task_calls})
    lines += [render("kernel_decl", symbol=s) for s in symbols]
    table_dtype = tvm.DataType(PAGE_TABLE_DTYPE)
    for task, e in executors.items():
        spans = plan.task(task).layout.spans
        lines.append(
            render("task_banner", task=task, n_calls=len(e.calls), arena_bytes=e.arena_bytes)
        )
        if packed:
            lines.append(render("table_decl", task=task))
            if plan.task(task).n_exclusive_pages and not zero_copy:
                coded = plan.task(task).coded is not None
                lines.append(
                    render("coded_exclusive_decl" if coded else "exclusive_decl", task=task)
                )
        else:
            lines.append(render("dense_decl", task=task))
        weights = "wv_weights" if packed else f"wv_dense_{task}"
        for k in range(len(e.constants)):
            words = e.constant_words(k)
            lines.append(render("constant", task=task, k=k, n=len(words), words=c_ints(words)))
        tensors = []  # (shape, data, dtype): e.tensors', then the page storage and scratch views
        for t in e.tensors:
            data = "NULL"  # inputs and outputs: the caller's buffers, bound by <task>_run
            shape, dtype = t.shape, tvm.DataType(t.dtype)
            if t.kind == "weight" and zero_copy:
                shape = (-(-spans[t.index].numel // plan.page_size),)
                data, dtype = f"(void*)({_table(task, spans[t.index], plan)})", table_dtype
            elif t.kind == "weight":
                data = f"{weights} + {spans[t.index].offset_elems}"
            elif t.kind == "arena":
                data = f"wv_arena + {t.index}"
            elif t.kind == "constant":
                data = f"(void*){task}_constant_{t.index}"
            tensors.append((shape, data, dtype))
        pages = len(tensors)
        if zero_copy and zero_copy.any_paged:
            pages_shape = (zero_copy.n_page_elems,)
            tensors.append((pages_shape, "(void*)wv_pages", tvm.DataType("float32")))
        call_args, gathers = [], []  # per call: tensor ids; the gathers to run before it
        for symbol, args in e.calls:
            ids, call_gathers, offset = [], [], 0
            paged = zero_copy.positions(e, symbol, args, "paged") if zero_copy else ()
            gathered = zero_copy.positions(e, symbol, args, "gathered") if zero_copy else ()
            for k, i in enumerate(args):
                if k in paged:  # (page storage, its page table)
                    ids += [pages, i]
                elif k in gathered:  # a view of the scratch its pages are copied into
                    span = spans[e.tensors[i].index]
                    ids.append(len(tensors))
                    tensors.append((span.shape, f"wv_scratch + {offset}", tvm.DataType("float32")))
                    table = _table(task, span, plan)
                    call_gathers.append((offset, table, span.numel))
                    offset += zero_copy.slot_elems(span.numel)
                else:
                    ids.append(i)
            call_args.append(ids)
            gathers.append(call_gathers)
        for i, (shape, _, _) in enumerate(tensors):
            dims = ", ".join(map(str, shape))
            lines.append(render("shape", task=task, i=i, ndim=len(shape), dims=dims))
        lines.append(render("tensors_head", task=task, n=len(tensors)))
        for i, (shape, data, dtype) in enumerate(tensors):
            lines.append(
                render(
                    "tensor",
                    task=task,
                    i=i,
                    data=data,
                    ndim=len(shape),
                    code=dtype.type_code,
                    bits=dtype.bits,
                )
            )
        lines.append(render("tensors_tail"))
        for j, ids in enumerate(call_args):
            items = ", ".join(render("arg", task=task, i=i) for i in ids)
            lines.append(render("args", task=task, j=j, n=len(ids), items=items))
        lines.append(render("run_head", task=task))
        lines += [
            render("bind_input", task=task, i=i, k=k) for k, i in enumerate(e.of_kind("input"))
        ]
        lines += [
            render("bind_output", task=task, i=i, k=k) for k, i in enumerate(e.of_kind("output"))
        ]
        for j, ((s, _), ids) in enumerate(zip(calls[task], call_args)):
            lines += [
                render("gather", offset=offset, table=table, numel=numel)
                for offset, table, numel in gathers[j]
            ]
            lines.append(render("call", task=task, symbol=s, j=j, n=len(ids)))
        lines.append(render("run_tail"))
    lines.append(render("tasks_head"))
    offsets = exclusive_file_offsets(plan, list(executors))
    for task in executors:
        pages = plan.task(task)
        gathered = packed and not zero_copy  # zero-copy: the switch gathers nothing
        exclusive = dict(exclusive="NULL", exclusive_codes="NULL", exclusive_bases="NULL")
        exclusive["exclusive_offset"] = offsets.get(task, 0)
        if gathered and pages.n_exclusive_pages and pages.coded is None:
            exclusive["exclusive"] = f"WV_EXCLUSIVE_ARRAY(wv_exclusive_{task})"
        elif gathered and pages.n_exclusive_pages:
            exclusive["exclusive_codes"] = f"wv_exclusive_codes_{task}"
            exclusive["exclusive_bases"] = f"wv_exclusive_bases_{task}"
        lines.append(
            render(
                "task",
                task=task,
                n_pages=pages.layout.n_pages if gathered else 0,
                page_table=f"wv_page_table_{task}" if gathered else "NULL",
                **exclusive,
            )
        )
    lines.append(render("tasks_tail", n=len(executors)))
    return "\n".join(lines) + "\n"


def exclusive_file_offsets(plan: PagePlan, names: list[str]) -> dict[str, int]:
    """Each task's byte offset in exclusive_pages.bin: the float32 exclusive pages of the tasks
    that have them (SmartDeal-coded ones stay in flash), in `names` order."""
    offsets, offset = {}, 0
    for name in names:
        t = plan.task(name)
        if t.n_exclusive_pages and t.coded is None:
            offsets[name] = offset
            offset += t.exclusive_pages.nbytes
    return offsets


def _table(task: str, span, plan: PagePlan) -> str:
    """The slice of the task's page table that lists a weight's pages."""
    return f"wv_page_table_{task} + {span.offset_elems // plan.page_size}"


def _symbol(e: Executor, symbol: str, args: list[int], zero_copy: ZeroCopyReads | None) -> str:
    positions = zero_copy.positions(e, symbol, args, "paged") if zero_copy else ()
    return paged_name(symbol, positions) if positions else symbol
