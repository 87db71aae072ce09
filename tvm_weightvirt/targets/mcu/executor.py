"""The static executor of one task: its kernel calls in order, its tensors, intermediates placed
in one arena, and the C that runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import relax

from ...compile.fusion import legalize_and_fuse
from ...passes.read_weights_through_pages import PAGE_TABLE_DTYPE, paged_name
from ...plan import PagePlan
from .templates import render

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
    kind: str  # "input" | "weight" | "arena" | "output"
    index: int  # input/weight/output: its position; arena: its byte offset
    first: int = 0  # arena: the call that writes it
    last: int = 0  # arena: the last call that reads it

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * tvm.DataType(self.dtype).bits // 8


@dataclass
class Executor:
    tensors: list[Tensor]
    calls: list[tuple[str, list[int]]]  # kernel symbol, tensor ids (inputs then output)
    arena_bytes: int

    def of_kind(self, kind: str) -> list[int]:
        return sorted(
            (i for i, t in enumerate(self.tensors) if t.kind == kind),
            key=lambda i: self.tensors[i].index,
        )

    def weight_positions(self, args: list[int]) -> tuple[int, ...]:
        """The positions of a call's arguments that are weights."""
        return tuple(k for k, i in enumerate(args) if self.tensors[i].kind == "weight")


def paged_uses(executors) -> dict[str, set[tuple[int, ...]]]:
    """Kernel -> the weight positions of each of its calls (`ReadWeightsThroughPages`' uses)."""
    uses: dict[str, set[tuple[int, ...]]] = {}
    for e in executors:
        for symbol, args in e.calls:
            uses.setdefault(symbol, set()).add(e.weight_positions(args))
    return uses


def task_executor(name: str, func: relax.Function) -> Executor:
    """The kernel calls of `task_<name>` in order, and its tensors with intermediates placed in
    one arena (a buffer is reused once its last reader has run)."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    n_in = int(func.attrs["num_input"])
    tensors, ids, tuples, calls, unsupported = [], {}, {}, [], []
    for i, param in enumerate(func.params):
        ids[param] = len(tensors)
        tensors.append(
            Tensor(*_shape_dtype(param), *(("input", i) if i < n_in else ("weight", i - n_in)))
        )
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op == call_tir:
                args = [ids[a] for a in value.args[1].fields]
                for a in args:
                    tensors[a].last = len(calls)
                ids[binding.var] = len(tensors)
                tensors.append(
                    Tensor(*_shape_dtype(binding.var), "arena", 0, len(calls), len(calls))
                )
                calls.append((value.args[0].name_hint, [*args, ids[binding.var]]))
            elif isinstance(value, relax.Tuple) and all(f in ids for f in value.fields):
                tuples[binding.var] = [ids[f] for f in value.fields]
            else:
                unsupported.append(f"{binding.var.name_hint} = {type(value).__name__}")
    result = func.body.body
    outputs = tuples.get(result) or ([ids[result]] if result in ids else [])
    if unsupported or not outputs or any(tensors[o].kind != "arena" for o in outputs):
        raise ValueError(
            f"task '{name}': the MCU executor runs only kernel calls returning fresh tensors; "
            f"found {unsupported or ['an output that is an input or a weight']}"
        )
    for k, o in enumerate(outputs):
        tensors[o].kind, tensors[o].index = "output", k
    return Executor(tensors, calls, place_in_arena(tensors))


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


def _shape_dtype(var: relax.Var) -> tuple[tuple[int, ...], str]:
    return tuple(int(d) for d in var.ty.shape.values), str(var.ty.dtype)


def executor_c(
    executors: dict[str, Executor],
    plan: PagePlan,
    packed: bool,
    zero_copy: bool = False,
    pool_in: str = "ram",
) -> str:
    """The C of every task's executor. A weight is a view of the weight buffer (packed), of the
    task's dense weights (not packed), or, zero-copy, the slice of the task's page table that
    lists its pages, passed beside the page storage `wv_pages`."""
    calls = {
        task: [(_symbol(e, s, args, zero_copy), args) for s, args in e.calls]
        for task, e in executors.items()
    }
    lines = [render("executor_head")]
    if zero_copy:
        lines.append(render("pages_decl", const="const " if pool_in == "flash" else ""))
    lines += [
        render("kernel_decl", symbol=s) for s in sorted({s for c in calls.values() for s, _ in c})
    ]
    table_dtype = tvm.DataType(PAGE_TABLE_DTYPE)
    for task, e in executors.items():
        spans = plan.task(task).layout.spans
        lines.append(
            render("task_banner", task=task, n_calls=len(e.calls), arena_bytes=e.arena_bytes)
        )
        if packed:
            lines.append(render("table_decl", task=task))
            if plan.task(task).n_exclusive_pages and not zero_copy:
                lines.append(render("exclusive_decl", task=task))
        else:
            lines.append(render("dense_decl", task=task))
        weights = "wv_weights" if packed else f"wv_dense_{task}"
        tensors = []  # (shape, data, dtype) in the order of e.tensors, then the page storage
        for t in e.tensors:
            data = "NULL"  # inputs and outputs: the caller's buffers, bound by <task>_run
            shape, dtype = t.shape, tvm.DataType(t.dtype)
            if t.kind == "weight" and zero_copy:
                span = spans[t.index]
                first = span.offset_elems // plan.page_size
                shape = (-(-span.numel // plan.page_size),)
                data, dtype = f"(void*)(wv_page_table_{task} + {first})", table_dtype
            elif t.kind == "weight":
                data = f"{weights} + {spans[t.index].offset_elems}"
            elif t.kind == "arena":
                data = f"wv_arena + {t.index}"
            tensors.append((shape, data, dtype))
        pages = len(tensors)
        if zero_copy:
            n_page_elems = plan.page_size * (
                plan.n_pool_pages + sum(p.n_exclusive_pages for p in plan.tasks.values())
            )
            tensors.append(((n_page_elems,), "(void*)wv_pages", tvm.DataType("float32")))
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
        call_args = []
        for _, args in calls[task]:
            ids = []
            for i in args:  # zero-copy: a weight is passed as (page storage, its page table)
                ids += [pages, i] if zero_copy and e.tensors[i].kind == "weight" else [i]
            call_args.append(ids)
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
        lines += [
            render("call", task=task, symbol=s, j=j, n=len(ids))
            for j, ((s, _), ids) in enumerate(zip(calls[task], call_args))
        ]
        lines.append(render("run_tail"))
    lines.append(render("tasks_head"))
    for task in executors:
        pages = plan.task(task)
        gathered = packed and not zero_copy  # zero-copy: the switch gathers nothing
        lines.append(
            render(
                "task",
                task=task,
                n_pages=pages.layout.n_pages if gathered else 0,
                page_table=f"wv_page_table_{task}" if gathered else "NULL",
                exclusive=f"wv_exclusive_{task}"
                if gathered and pages.n_exclusive_pages
                else "NULL",
            )
        )
    lines.append(render("tasks_tail", n=len(executors)))
    return "\n".join(lines) + "\n"


def _symbol(e: Executor, symbol: str, args: list[int], zero_copy: bool) -> str:
    positions = e.weight_positions(args) if zero_copy else ()
    return paged_name(symbol, positions) if positions else symbol
