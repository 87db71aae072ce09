"""The static executor of one task: its kernel calls in order, its tensors, intermediates placed
in one arena, and the C that runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import relax

from ...compile.fusion import legalize_and_fuse
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


def executor_c(executors: dict[str, Executor], plan: PagePlan, packed: bool) -> str:
    symbols = sorted({symbol for e in executors.values() for symbol, _ in e.calls})
    lines = [render("executor_head")]
    lines += [render("kernel_decl", symbol=s) for s in symbols]
    for task, e in executors.items():
        spans = plan.task(task).layout.spans
        lines.append(
            render("task_banner", task=task, n_calls=len(e.calls), arena_bytes=e.arena_bytes)
        )
        if packed:
            lines.append(render("table_decl", task=task))
            if plan.task(task).n_exclusive_pages:
                lines.append(render("exclusive_decl", task=task))
        else:
            lines.append(render("dense_decl", task=task))
        weights = "wv_weights" if packed else f"wv_dense_{task}"
        for i, t in enumerate(e.tensors):
            lines.append(
                render(
                    "shape", task=task, i=i, ndim=len(t.shape), dims=", ".join(map(str, t.shape))
                )
            )
        lines.append(render("tensors_head", task=task, n=len(e.tensors)))
        for i, t in enumerate(e.tensors):
            data = "NULL"  # inputs and outputs: the caller's buffers, bound by <task>_run
            if t.kind == "weight":
                data = f"{weights} + {spans[t.index].offset_elems}"
            elif t.kind == "arena":
                data = f"wv_arena + {t.index}"
            dtype = tvm.DataType(t.dtype)
            lines.append(
                render(
                    "tensor",
                    task=task,
                    i=i,
                    data=data,
                    ndim=len(t.shape),
                    code=dtype.type_code,
                    bits=dtype.bits,
                )
            )
        lines.append(render("tensors_tail"))
        for j, (_, args) in enumerate(e.calls):
            items = ", ".join(render("arg", task=task, i=i) for i in args)
            lines.append(render("args", task=task, j=j, n=len(args), items=items))
        lines.append(render("run_head", task=task))
        lines += [
            render("bind_input", task=task, i=i, k=k) for k, i in enumerate(e.of_kind("input"))
        ]
        lines += [
            render("bind_output", task=task, i=i, k=k) for k, i in enumerate(e.of_kind("output"))
        ]
        lines += [
            render("call", task=task, symbol=s, j=j, n=len(args))
            for j, (s, args) in enumerate(e.calls)
        ]
        lines.append(render("run_tail"))
    lines.append(render("tasks_head"))
    for task in executors:
        pages = plan.task(task)
        lines.append(
            render(
                "task",
                task=task,
                n_pages=pages.layout.n_pages if packed else 0,
                page_table=f"wv_page_table_{task}" if packed else "NULL",
                exclusive=f"wv_exclusive_{task}" if packed and pages.n_exclusive_pages else "NULL",
            )
        )
    lines.append(render("tasks_tail", n=len(executors)))
    return "\n".join(lines) + "\n"
