"""A torch twin of a Task: its Relax graph interpreted with torch ops, its weights as torch
parameters under the task's own weight names. Fisher and retraining then work for tasks that
came from ONNX as well as from torch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from .task import IntakeError, Task


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _conv(dims: int):
    conv = {1: F.conv1d, 2: F.conv2d}[dims]

    def run(x, w, attrs):
        if (
            str(attrs.data_layout) != ("NCW", "NCHW")[dims - 1]
            or str(attrs.kernel_layout) != ("OIW", "OIHW")[dims - 1]
        ):
            raise IntakeError(
                f"conv{dims}d layout {attrs.data_layout}/{attrs.kernel_layout} is not supported"
            )
        pad = _ints(attrs.padding)  # [before..., after...]
        before, after = pad[:dims], pad[dims:]
        if before != after:
            x = F.pad(x, [p for b, a in zip(before[::-1], after[::-1]) for p in (b, a)])
            before = [0] * dims
        return conv(
            x, w, None, _ints(attrs.strides), before, _ints(attrs.dilation), int(attrs.groups)
        )

    return run


def _pool(kind: str):
    def run(x, attrs):
        pad = _ints(attrs.padding)
        if pad[:2] != pad[2:]:
            x = F.pad(
                x, [pad[1], pad[3], pad[0], pad[2]], value=-float("inf") if kind == "max" else 0.0
            )
            pad = [0, 0, 0, 0]
        if kind == "max":
            return F.max_pool2d(
                x,
                _ints(attrs.pool_size),
                _ints(attrs.strides),
                pad[:2],
                _ints(attrs.dilation),
                bool(attrs.ceil_mode),
            )
        return F.avg_pool2d(
            x,
            _ints(attrs.pool_size),
            _ints(attrs.strides),
            pad[:2],
            bool(attrs.ceil_mode),
            bool(attrs.count_include_pad),
        )

    return run


def _batch_norm(x, gamma, beta, mean, var, attrs):
    axis = int(attrs.axis) % x.dim()
    shape = [1] * x.dim()
    shape[axis] = -1
    out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + float(attrs.epsilon))
    if bool(attrs.scale):
        out = out * gamma.view(shape)
    if bool(attrs.center):
        out = out + beta.view(shape)
    return (out, mean, var)


def _axes(attrs, x):
    return list(range(x.dim())) if attrs.axis is None else _ints(attrs.axis)


# Relax op -> torch, given (tensor arguments..., attrs); non-tensor arguments are handled below.
OPS = {
    "relax.nn.conv1d": _conv(1),
    "relax.nn.conv2d": _conv(2),
    "relax.nn.max_pool2d": _pool("max"),
    "relax.nn.avg_pool2d": _pool("avg"),
    "relax.nn.batch_norm": _batch_norm,
    "relax.matmul": lambda a, b, attrs: torch.matmul(a, b),
    "relax.add": lambda a, b, attrs: a + b,
    "relax.subtract": lambda a, b, attrs: a - b,
    "relax.multiply": lambda a, b, attrs: a * b,
    "relax.divide": lambda a, b, attrs: a / b,
    "relax.nn.relu": lambda x, attrs: F.relu(x),
    "relax.nn.leakyrelu": lambda x, attrs: F.leaky_relu(x, float(attrs.alpha)),
    "relax.sigmoid": lambda x, attrs: torch.sigmoid(x),
    "relax.tanh": lambda x, attrs: torch.tanh(x),
    "relax.exp": lambda x, attrs: torch.exp(x),
    "relax.nn.softmax": lambda x, attrs: F.softmax(x, int(attrs.axis)),
    "relax.nn.log_softmax": lambda x, attrs: F.log_softmax(x, int(attrs.axis)),
    "relax.mean": lambda x, attrs: x.mean(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.sum": lambda x, attrs: x.sum(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.max": lambda x, attrs: x.amax(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.permute_dims": lambda x, attrs: x.permute(
        list(range(x.dim()))[::-1] if attrs.axes is None else _ints(attrs.axes)
    ),
    "relax.squeeze": lambda x, attrs: (
        x.squeeze(_ints(attrs.axis)) if attrs.axis is not None else x.squeeze()
    ),
    "relax.expand_dims": lambda x, attrs: x.reshape(
        [
            d
            for i in range(x.dim() + len(attrs.axis))
            for d in ([1] if i in _ints(attrs.axis) else [])
        ]
        or x.shape
    ),
}
SHAPED = {"relax.reshape"}  # (tensor, ShapeExpr)
TUPLED = {"relax.concat"}  # (Tuple of tensors)


class TorchTwin(torch.nn.Module):
    """`task.mod["main"]` run with torch ops, for any batch size (reshapes keep the batch axis).
    Parameters carry the task's weight names (a name with dots becomes nested submodules:
    `conv1.weight`), so `state_dict()` and `torch.func.functional_call` use the task's keys;
    `weight_names` keeps the task's (layout) order."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        func = task.mod["main"]
        unsupported = sorted(_op_names(func) - set(OPS) - SHAPED - TUPLED)
        if unsupported:
            raise IntakeError(f"task '{task.name}': no torch twin for ops {unsupported}")
        self.func, self.n_inputs = func, task.num_inputs
        self.weight_names = list(task.weights)
        for name, value in task.weights.items():
            *path, leaf = name.split(".")
            owner = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(np.array(value))))

    def forward(self, *inputs: torch.Tensor):
        params = dict(self.named_parameters())
        env = dict(zip(self.func.params[: self.n_inputs], inputs))
        env.update(zip(self.func.params[self.n_inputs :], (params[n] for n in self.weight_names)))
        for block in self.func.body.blocks:
            for binding in block.bindings:
                env[binding.var] = _evaluate(binding.value, env)
        out = _evaluate(self.func.body.body, env)
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out


def _evaluate(expr, env):
    if isinstance(expr, relax.Var):
        return env[expr]
    if isinstance(expr, tvm.ir.GenericConst):
        return torch.from_numpy(expr.value.numpy())
    if isinstance(expr, relax.Tuple):
        return tuple(_evaluate(f, env) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return _evaluate(expr.tuple_value, env)[int(expr.index)]
    name = expr.op.name
    if name in SHAPED:
        x, shape = _evaluate(expr.args[0], env), _ints(expr.args[1].values)
        if x.numel() != int(np.prod(shape)):  # another batch size than the graph's: keep it
            shape = [x.shape[0]] + shape[1:]
        return x.reshape(shape)
    if name in TUPLED:
        return torch.cat(list(_evaluate(expr.args[0], env)), int(expr.attrs.axis))
    return OPS[name](*(_evaluate(a, env) for a in expr.args), expr.attrs)


def _op_names(func: relax.Function) -> set[str]:
    names = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.add(expr.op.name)

    relax.analysis.post_order_visit(func.body, visit)
    return names
