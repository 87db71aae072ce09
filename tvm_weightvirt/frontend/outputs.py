"""A task's outputs as packing sees them: their names and what each one holds (logits,
probabilities or plain values), read from the graph, so each output is distilled with a loss
that suits it. An output computed by a trailing Softmax holds probabilities along its axis, a
trailing Sigmoid independent probabilities; a task of one output of shape [N, C >= 2] (or
[N, C, 1, ...], as convolutional heads give) holds logits, anything else values."""

from __future__ import annotations

from dataclasses import replace

import tvm
from tvm import relax

from ..algorithms.output_objectives import KINDS, OutputKind
from .task import Task

# Ops an output may pass through after its activation without changing what it holds.
_ALIASES = {"relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten"}


def output_names(task: Task) -> list[str]:
    """The task's output names: the ONNX graph's, else `output` (one) or `output0`, ...."""
    n = len(_output_exprs(task.mod["main"]))
    if len(task.output_names) == n:
        return list(task.output_names)
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def output_kinds(
    task: Task, given: dict[str, str] | None = None, weights: dict[str, float] | None = None
) -> list[OutputKind]:
    """Each output's kind: `given` (output name -> kind) where the user said, else from the
    graph; its loss weight from `weights` (default 1). Names that are no output of the task
    are an error naming the outputs there are."""
    given, weights = dict(given or {}), dict(weights or {})
    func = task.mod["main"]
    names = output_names(task)
    unknown = sorted((set(given) | set(weights)) - set(names))
    if unknown:
        raise ValueError(
            f"task '{task.name}': no output named {unknown} (its outputs: {', '.join(names)})"
        )
    bindings = _bindings(func)
    kinds = []
    for name, expr in zip(names, _output_exprs(func)):
        shape = tuple(int(d) for d in expr.ty.shape.values)
        activation = _trailing_activation(expr, bindings, shape)
        if name in given:
            kinds.append(_given_kind(task.name, name, shape, given[name], activation))
        elif activation is not None:
            op, axis = activation
            kinds.append(
                OutputKind(
                    name, shape, "probs", axis, categorical=op == "softmax", why=f"a trailing {op}"
                )
            )
        elif len(names) == 1 and _classifier_shaped(shape):
            kinds.append(OutputKind(name, shape, "logits", 1, why="its shape [N, C]"))
        else:
            kinds.append(OutputKind(name, shape, "values", why="no trailing softmax or sigmoid"))
    return [replace(k, weight=float(weights.get(k.name, 1.0))) for k in kinds]


def _given_kind(task: str, name: str, shape: tuple[int, ...], kind: str, activation) -> OutputKind:
    if kind not in KINDS:
        raise ValueError(f"task '{task}': output '{name}': kind {kind!r} is none of {KINDS}")
    if kind == "values":
        return OutputKind(name, shape, kind, why="given")
    if kind == "logits" and (len(shape) < 2 or shape[1] < 2):
        raise ValueError(
            f"task '{task}': output '{name}' of shape {list(shape)} has no class axis "
            "(axis 1 of at least 2) for logits: give it as values"
        )
    if kind == "probs" and activation is not None:
        op, axis = activation
        return OutputKind(name, shape, kind, axis, categorical=op == "softmax", why="given")
    # probabilities without a trailing activation: along axis 1 when it has classes (and
    # the shape has one), else independent
    categorical = kind == "logits" or (len(shape) >= 2 and shape[1] >= 2)
    axis = 1 if len(shape) >= 2 else 0
    return OutputKind(name, shape, kind, axis, categorical=categorical, why="given")


def _classifier_shaped(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and shape[1] >= 2 and all(d == 1 for d in shape[2:])


def _output_exprs(func: relax.Function) -> list[relax.Expr]:
    body = func.body.body
    if isinstance(body, relax.Tuple):
        return list(body.fields)
    if isinstance(body.ty, relax.TupleType):
        bound = _bindings(func).get(body)
        if isinstance(bound, relax.Tuple):
            return list(bound.fields)
        raise ValueError("the model returns a tuple that is not built in its graph")
    return [body]


def _bindings(func: relax.Function) -> dict[relax.Var, relax.Expr]:
    return {b.var: b.value for block in func.body.blocks for b in block.bindings}


def _trailing_activation(expr, bindings, shape: tuple[int, ...]) -> tuple[str, int] | None:
    """("softmax", axis) or ("sigmoid", 1) when `expr` is computed by one (through
    aliases and reshapes that keep the axes before it), else None."""
    while isinstance(expr, relax.Var) and expr in bindings:
        value = bindings[expr]
        if isinstance(value, relax.Var):
            expr = value
            continue
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            return None
        op = value.op.name
        if op == "relax.nn.softmax":
            in_shape = [int(d) for d in value.args[0].ty.shape.values]
            axis = int(value.attrs.axis) % len(in_shape)
            if in_shape == list(shape):
                return ("softmax", axis)
            # reshaped after it (ONNX before opset 13 flattens to 2-D around the axis): the
            # classes stay the last axis where the softmax ran along its input's last
            last = axis == len(in_shape) - 1 and shape[-1] == in_shape[-1] and len(shape) > 1
            return ("softmax", len(shape) - 1) if last else None
        if op == "relax.sigmoid":
            return ("sigmoid", 1)  # elementwise: no class axis
        if op not in _ALIASES:
            return None
        expr = value.args[0]
    return None
