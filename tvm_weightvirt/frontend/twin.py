"""A torch twin of a Task: its Relax graph interpreted with torch ops, its weights as torch
parameters under the task's own weight names. Fisher and retraining then work for tasks that
came from ONNX as well as from torch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from ..passes.conv_weights_output_channels_last import LAYOUTS as CONV_LAYOUTS
from .task import IntakeError, Task

Value = torch.Tensor | tuple | list | int | float


def _ints(values) -> list[int]:
    return [int(v) for v in values]


# **** convolution, pooling, normalization ****

_LAYOUT = {1: ("NCW", "OIW"), 2: ("NCHW", "OIHW"), 3: ("NCDHW", "OIDHW")}
# convolution weights stored output channels last (a task in kernel layout) -> torch's OI...
_FROM_OUTPUT_CHANNELS_LAST = {
    int(op.removeprefix("relax.nn.conv")[0]): (new_layout, np.argsort(axes).tolist())
    for op, (_, _, new_layout, axes) in CONV_LAYOUTS.items()
}


def _conv(dims: int):
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]

    def run(x, w, attrs):
        layout, to_torch = _FROM_OUTPUT_CHANNELS_LAST.get(dims, (None, None))
        if str(attrs.kernel_layout) == layout:
            w = w.permute(to_torch)
        before, after = _split_padding(attrs.padding, dims)
        if before != after:  # torch pads symmetrically: pad the difference explicitly
            x = F.pad(x, _torch_pad(before, after))
            before = [0] * dims
        out = conv(
            x, w, None, _ints(attrs.strides), before, _ints(attrs.dilation), int(attrs.groups)
        )
        return _cast(out, attrs.out_dtype)

    return run


def _split_padding(padding, dims: int) -> tuple[list[int], list[int]]:
    pad = _ints(padding)  # Relax: [before per spatial axis..., after per spatial axis...]
    return pad[:dims], pad[dims:]


def _torch_pad(before: list[int], after: list[int]) -> list[int]:
    """F.pad's order: last axis first, (before, after) each."""
    return [p for b, a in zip(before[::-1], after[::-1]) for p in (b, a)]


def _conv_transpose(dims: int):
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[dims]

    def run(x, w, attrs):
        out = conv(
            x,
            w,
            None,
            _ints(attrs.strides),
            0,
            _ints(attrs.output_padding),
            int(attrs.groups),
            _ints(attrs.dilation),
        )
        # Relax pads before and after per axis: crop the full output (torch pads symmetrically)
        before, after = _split_padding(attrs.padding, dims)
        crop = [slice(b, out.shape[2 + i] - a) for i, (b, a) in enumerate(zip(before, after))]
        return _cast(out[(slice(None), slice(None), *crop)], attrs.out_dtype)

    return run


def _pool(kind: str, dims: int):
    max_pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
    avg_pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]

    def run(x, attrs):
        size, strides = _ints(attrs.pool_size), _ints(attrs.strides)
        ceil_mode, before, after = bool(attrs.ceil_mode), *_split_padding(attrs.padding, dims)
        if kind == "max":
            if before != after:
                x, before = F.pad(x, _torch_pad(before, after), value=-float("inf")), [0] * dims
            return max_pool(x, size, strides, before, _ints(attrs.dilation), ceil_mode)
        if before == after:
            return avg_pool(x, size, strides, before, ceil_mode, bool(attrs.count_include_pad))
        # Asymmetric padding (ONNX auto_pad, e.g. Inception v1's last pool): pad explicitly.
        # Padded zeros must not count unless count_include_pad, so divide window sums by the
        # window's count of real elements, pooled the same way from a padded mask of ones.
        pad = _torch_pad(before, after)
        out = avg_pool(F.pad(x, pad), size, strides, 0, ceil_mode, True)
        if bool(attrs.count_include_pad):
            return out
        ones = F.pad(torch.ones_like(x[:1, :1]), pad)
        return out / avg_pool(ones, size, strides, 0, ceil_mode, True)

    return run


def _adaptive_avg_pool(dims: int):
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[dims]

    def run(x, attrs):
        # output_size None: the input's own spatial size
        size = list(x.shape[2:]) if attrs.output_size is None else _ints(attrs.output_size)
        return pool(x, size)

    return run


def _along(v, axis: int, ndim: int):
    """A per-channel vector `v` shaped to broadcast along `axis` of an `ndim`-d tensor."""
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)


def _batch_norm(x, gamma, beta, mean, var, attrs):
    axis = int(attrs.axis)
    out = (x - _along(mean, axis, x.dim())) / torch.sqrt(
        _along(var, axis, x.dim()) + float(attrs.epsilon)
    )
    return (_scaled(out, gamma, beta, axis, attrs), mean, var)


def _layer_norm(x, gamma, beta, attrs):
    n = len(attrs.axes)  # the trailing axes (see _layer_norm_problems)
    return F.layer_norm(
        x,
        x.shape[-n:],
        gamma if bool(attrs.scale) else None,
        beta if bool(attrs.center) else None,
        float(attrs.epsilon),
    )


def _dropout(x, attrs):
    # The twin, like the compiled graph, is the inference graph: dropout is the identity.
    # Relax's dropout returns (output, mask); the graph reads [0].
    return (x, torch.ones_like(x))


# **** shapes, slices, tuples ****


def _expand_dims(x, attrs):
    ndim = x.dim() + len(attrs.axis)  # axes index the output
    for axis in sorted(a % ndim for a in _ints(attrs.axis)):
        x = x.unsqueeze(axis)
    return x


def _strided_slice(x, axes, begin, end, *strides_and_attrs):
    strides = strides_and_attrs[0] if len(strides_and_attrs) == 2 else [1] * len(axes)
    for axis, b, e, step in zip(axes, begin, end, strides):
        axis %= x.dim()
        if step > 0:  # Relax clamps out-of-range bounds (ends like INT64_MAX) as slices do
            x = x[(slice(None),) * axis + (slice(b, e, step),)]
        else:  # torch slices take no negative step: pick the indices
            picked = range(*slice(b, e, step).indices(x.shape[axis]))
            x = x.index_select(axis, torch.tensor(picked, dtype=torch.long))
    return x


def _take(x, indices, attrs):
    """Relax's take: `x`'s slices along `axis` at `indices` (any shape; a scalar drops the axis),
    negative indices from the end ("wrap" mode, `NormalizeTakeIndices`)."""
    if attrs.axis is None:
        x, axis = x.reshape(-1), 0
    else:
        axis = int(attrs.axis) % x.dim()
    index = torch.as_tensor(indices, dtype=torch.long) % x.shape[axis]
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1 :])


def _split(x, attrs):
    # an int: that many equal sections; else the indices to split before (numpy.split's rule)
    sections = attrs.indices_or_sections
    sections = int(sections) if isinstance(sections, tvm.tirx.IntImm) else _ints(sections)
    return tuple(torch.tensor_split(x, sections, int(attrs.axis)))


def _resize2d(x, size: list[int], attrs):
    """TOPI's resize2d (NCHW), one axis after the other: the source coordinate of each output
    position (float32, as TOPI computes it), then the nearest pixel or a lerp of two."""
    method = str(attrs.method)
    for axis, n_out in zip((2, 3), size):
        n_in = x.shape[axis]
        src = _resize_source(n_in, n_out, str(attrs.coordinate_transformation_mode))
        if method == "nearest_neighbor":
            index = _nearest(
                src, str(attrs.rounding_method), str(attrs.coordinate_transformation_mode)
            )
            x = x.index_select(axis, torch.from_numpy(np.clip(index, 0, n_in - 1)))
            continue
        low = np.floor(src)
        below, above = (
            x.index_select(axis, torch.from_numpy(np.clip(low + k, 0, n_in - 1).astype(np.int64)))
            for k in (0, 1)
        )
        t = _along(torch.from_numpy((src - low).astype(np.float32)), axis, x.dim())
        x = below * (1.0 - t) + above * t
    return x


def _resize_source(n_in: int, n_out: int, mode: str) -> np.ndarray:
    out, scale = np.arange(n_out, dtype=np.float32), np.float32(n_in) / np.float32(n_out)
    if mode == "half_pixel" or (mode == "pytorch_half_pixel" and n_out > 1):
        return (out + np.float32(0.5)) * scale - np.float32(0.5)
    if mode == "pytorch_half_pixel":
        return np.zeros(n_out, np.float32)
    if mode == "align_corners":
        return np.float32(n_in - 1) / np.float32(max(n_out - 1, 1)) * out
    if mode == "tf_half_pixel_for_nn":
        return (out + np.float32(0.5)) * scale
    return scale * out  # asymmetric


def _nearest(src: np.ndarray, rounding: str, mode: str) -> np.ndarray:
    rounding = rounding or ("round" if mode == "align_corners" else "floor")
    if rounding == "round":  # away from zero, as llvm's round
        index = np.sign(src) * np.floor(np.abs(src) + 0.5)
    elif rounding == "round_prefer_floor":
        index = np.ceil(src - 0.5)
    elif rounding == "round_prefer_ceil":
        index = np.floor(src + 0.5)
    elif rounding == "floor":
        index = np.floor(src + np.float32(1e-5))
    else:  # ceil
        index = np.ceil(src - np.float32(1e-5))
    return index.astype(np.int64)


def _group_norm(x, gamma, beta, attrs):
    """Relax's group_norm: each group of channels normalized over itself and `axes`."""
    c_axis, groups = int(attrs.channel_axis) % x.dim(), int(attrs.num_groups)
    shape = list(x.shape)
    grouped = x.reshape(shape[:c_axis] + [groups, shape[c_axis] // groups] + shape[c_axis + 1 :])
    axes = [c_axis + 1] + [a + (a > c_axis) for a in (int(a) % x.dim() for a in attrs.axes)]
    standardized = _standardized(grouped, axes, attrs).reshape(shape)
    return _scaled(standardized, gamma, beta, c_axis, attrs)


def _instance_norm(x, gamma, beta, attrs):
    """Relax's instance_norm: normalized over `axes`, scaled per `channel_axis`."""
    axes = [int(a) % x.dim() for a in attrs.axes]
    return _scaled(_standardized(x, axes, attrs), gamma, beta, int(attrs.channel_axis), attrs)


def _standardized(x, axes: list[int], attrs):
    mean = x.mean(axes, keepdim=True)
    var = x.var(axes, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + float(attrs.epsilon))


def _scaled(x, gamma, beta, axis: int, attrs):
    """`x` times `gamma` (attribute `scale`) plus `beta` (`center`), per channel of `axis`."""
    if bool(attrs.scale):
        x = x * _along(gamma, axis, x.dim())
    return x + _along(beta, axis, x.dim()) if bool(attrs.center) else x


def _tile(x, attrs):
    repeats = _ints(attrs.repeats)
    return x.repeat([1] * (x.dim() - len(repeats)) + repeats)  # numpy.tile's leading ones


def _arg_extremum(op, x, attrs):
    keepdim = bool(attrs.keepdims)
    if attrs.axis is None:
        out = op(x)
        return out.reshape([1] * x.dim()) if keepdim else out
    return op(x, int(attrs.axis), keepdim)


def _topk(x, attrs):
    values, indices = torch.topk(x, int(attrs.k), int(attrs.axis), bool(attrs.largest))
    indices = indices.to(getattr(torch, str(attrs.dtype)))
    return {"both": (values, indices), "values": values, "indices": indices}[str(attrs.ret_type)]


def _axes(attrs, x):
    return list(range(x.dim())) if attrs.axis is None else _ints(attrs.axis)


def _pad(x, attrs):
    width = _ints(attrs.pad_width)  # per axis (before, after), first axis first
    pad = [p for i in reversed(range(x.dim())) for p in width[2 * i : 2 * i + 2]]
    mode = _PAD_MODES[str(attrs.pad_mode)]
    return (
        F.pad(x, pad, mode, float(attrs.pad_value)) if mode == "constant" else F.pad(x, pad, mode)
    )


_PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


def _cast(x: torch.Tensor, dtype) -> torch.Tensor:
    return x if dtype is None or str(dtype) in ("", "void") else x.to(getattr(torch, str(dtype)))


# Relax op -> torch, given the call's evaluated arguments (tensors; tuples of them; shapes and
# integer tuples as lists/tuples of ints; scalars as numbers), then its attrs.
OPS: dict[str, Callable[..., Value]] = {
    "relax.nn.conv1d": _conv(1),
    "relax.nn.conv2d": _conv(2),
    "relax.nn.conv3d": _conv(3),
    "relax.nn.conv1d_transpose": _conv_transpose(1),
    "relax.nn.conv2d_transpose": _conv_transpose(2),
    "relax.nn.max_pool1d": _pool("max", 1),
    "relax.nn.max_pool2d": _pool("max", 2),
    "relax.nn.max_pool3d": _pool("max", 3),
    "relax.nn.avg_pool1d": _pool("avg", 1),
    "relax.nn.avg_pool2d": _pool("avg", 2),
    "relax.nn.avg_pool3d": _pool("avg", 3),  # also ONNX LRN: a window over channels
    "relax.nn.adaptive_avg_pool1d": _adaptive_avg_pool(1),
    "relax.nn.adaptive_avg_pool2d": _adaptive_avg_pool(2),
    "relax.nn.adaptive_avg_pool3d": _adaptive_avg_pool(3),
    "relax.nn.batch_norm": _batch_norm,
    "relax.nn.layer_norm": _layer_norm,
    "relax.nn.group_norm": _group_norm,
    "relax.nn.instance_norm": _instance_norm,
    "relax.nn.dropout": _dropout,
    "relax.nn.pad": _pad,
    "relax.matmul": lambda a, b, attrs: _cast(torch.matmul(a, b), attrs.out_dtype),
    "relax.add": lambda a, b, attrs: a + b,
    "relax.subtract": lambda a, b, attrs: a - b,
    "relax.multiply": lambda a, b, attrs: a * b,
    "relax.divide": lambda a, b, attrs: a / b,
    "relax.power": lambda a, b, attrs: torch.pow(a, b),
    "relax.maximum": lambda a, b, attrs: torch.maximum(a, b),
    "relax.minimum": lambda a, b, attrs: torch.minimum(a, b),
    "relax.greater": lambda a, b, attrs: torch.as_tensor(a) > b,
    "relax.less": lambda a, b, attrs: torch.as_tensor(a) < b,
    "relax.greater_equal": lambda a, b, attrs: torch.as_tensor(a) >= b,
    "relax.less_equal": lambda a, b, attrs: torch.as_tensor(a) <= b,
    "relax.equal": lambda a, b, attrs: torch.as_tensor(a) == b,
    "relax.not_equal": lambda a, b, attrs: torch.as_tensor(a) != b,
    "relax.logical_not": lambda x, attrs: torch.logical_not(x),
    "relax.logical_and": lambda a, b, attrs: torch.logical_and(a, b),
    "relax.logical_or": lambda a, b, attrs: torch.logical_or(a, b),
    "relax.where": lambda cond, a, b, attrs: torch.where(cond, a, b),
    "relax.clip": lambda x, low, high, attrs: torch.clamp(x, low, high),
    "relax.nn.relu": lambda x, attrs: F.relu(x),
    "relax.nn.prelu": lambda x, alpha, attrs: torch.where(
        x >= 0, x, x * _along(alpha, int(attrs.axis), x.dim())
    ),
    "relax.nn.leakyrelu": lambda x, attrs: F.leaky_relu(x, float(attrs.alpha)),
    "relax.nn.gelu": lambda x, attrs: F.gelu(x),
    "relax.erf": lambda x, attrs: torch.erf(x),
    "relax.nn.gelu_tanh": lambda x, attrs: F.gelu(x, approximate="tanh"),
    "relax.nn.silu": lambda x, attrs: F.silu(x),
    "relax.sigmoid": lambda x, attrs: torch.sigmoid(x),
    "relax.tanh": lambda x, attrs: torch.tanh(x),
    "relax.exp": lambda x, attrs: torch.exp(x),
    "relax.log": lambda x, attrs: torch.log(x),
    "relax.sqrt": lambda x, attrs: torch.sqrt(x),
    "relax.rsqrt": lambda x, attrs: torch.rsqrt(x),
    "relax.negative": lambda x, attrs: -x,
    "relax.abs": lambda x, attrs: torch.abs(x),
    "relax.astype": lambda x, attrs: _cast(x, attrs.dtype),
    "relax.nn.softmax": lambda x, attrs: F.softmax(x, int(attrs.axis)),
    "relax.nn.log_softmax": lambda x, attrs: F.log_softmax(x, int(attrs.axis)),
    "relax.mean": lambda x, attrs: x.mean(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.sum": lambda x, attrs: x.sum(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.variance": lambda x, attrs: x.var(
        _axes(attrs, x), unbiased=False, keepdim=bool(attrs.keepdims)
    ),
    "relax.max": lambda x, attrs: x.amax(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.min": lambda x, attrs: x.amin(_axes(attrs, x), keepdim=bool(attrs.keepdims)),
    "relax.topk": _topk,
    "relax.argmax": lambda x, attrs: _arg_extremum(torch.argmax, x, attrs),
    "relax.argmin": lambda x, attrs: _arg_extremum(torch.argmin, x, attrs),
    "relax.flip": lambda x, attrs: torch.flip(x, [int(attrs.axis)]),
    "relax.tile": _tile,
    "relax.image.resize2d": _resize2d,
    "relax.reshape": lambda x, shape, attrs: x.reshape(shape),
    "relax.broadcast_to": lambda x, shape, attrs: x.expand(shape),
    "relax.permute_dims": lambda x, attrs: x.permute(
        list(range(x.dim()))[::-1] if attrs.axes is None else _ints(attrs.axes)
    ),
    "relax.squeeze": lambda x, attrs: (
        x.squeeze(tuple(_ints(attrs.axis))) if attrs.axis is not None else x.squeeze()
    ),
    "relax.expand_dims": _expand_dims,
    "relax.strided_slice": _strided_slice,
    "relax.split": _split,
    "relax.take": _take,
    "relax.concat": lambda xs, attrs: torch.cat(list(xs), int(attrs.axis)),
    "relax.stack": lambda xs, attrs: torch.stack(list(xs), int(attrs.axis)),
}


# **** attributes the torch ops above cannot honour ****


def _layout_problems(attrs, dims: int, kernel: bool = False) -> list[str]:
    data, weight = _LAYOUT[dims]
    names = ["data_layout", "kernel_layout", "out_layout"] if kernel else ["layout", "out_layout"]
    wanted = [(data,), (weight, _FROM_OUTPUT_CHANNELS_LAST.get(dims, ("",))[0]), (data,)]
    return [
        f"{name}={getattr(attrs, name)}"
        for name, want in zip(names, wanted if kernel else wanted[::2])
        if str(getattr(attrs, name)) not in (*want, "")  # out_layout "" means the data layout
    ]


def _avg_pool_problems(attrs, dims: int) -> list[str]:
    problems = _layout_problems(attrs, dims)
    if any(d != 1 for d in _ints(attrs.dilation)):  # torch's avg_pool has no dilation
        problems.append(f"dilation={_ints(attrs.dilation)}")
    return problems


def _layer_norm_problems(call) -> list[str]:
    ndim = call.args[0].ty.ndim
    axes = sorted(a % ndim for a in _ints(call.attrs.axes))
    if axes != list(range(ndim - len(axes), ndim)):  # F.layer_norm normalizes trailing axes
        return [f"axes={_ints(call.attrs.axes)}"]
    return []


def _layout_check(dims: int, kernel: bool = False) -> Callable[[relax.Call], list[str]]:
    return lambda call: _layout_problems(call.attrs, dims, kernel)


def _transpose_layout_check(dims: int) -> Callable[[relax.Call], list[str]]:
    data, weight = _LAYOUT[dims]
    weight = "IO" + weight[2:]  # torch's transposed weights: (in, out / groups, ...)
    return lambda call: [
        f"{name}={getattr(call.attrs, name)}"
        for name, want in [("data_layout", data), ("kernel_layout", weight), ("out_layout", data)]
        if str(getattr(call.attrs, name)) not in (want, "")
    ]


def _avg_pool_check(dims: int) -> Callable[[relax.Call], list[str]]:
    return lambda call: _avg_pool_problems(call.attrs, dims)


# Relax op -> the attribute values of a call that its torch op cannot honour ("name=value").
ATTR_CHECKS: dict[str, Callable[[relax.Call], list[str]]] = {
    **{f"relax.nn.conv{d}d": _layout_check(d, kernel=True) for d in (1, 2, 3)},
    **{f"relax.nn.conv{d}d_transpose": _transpose_layout_check(d) for d in (1, 2)},
    **{f"relax.nn.max_pool{d}d": _layout_check(d) for d in (1, 2, 3)},
    **{f"relax.nn.avg_pool{d}d": _avg_pool_check(d) for d in (1, 2, 3)},
    **{f"relax.nn.adaptive_avg_pool{d}d": _layout_check(d) for d in (1, 2, 3)},
    # training-mode batch norm uses the batch's statistics; the twin uses the running ones
    "relax.nn.batch_norm": lambda call: ["training=True"] if bool(call.attrs.training) else [],
    "relax.nn.layer_norm": _layer_norm_problems,
    "relax.nn.pad": lambda call: (
        [] if str(call.attrs.pad_mode) in _PAD_MODES else [f"pad_mode={call.attrs.pad_mode}"]
    ),
    "relax.image.resize2d": lambda call: [
        f"{name}={getattr(call.attrs, name)}"
        for name, taken in _RESIZE_TAKES.items()
        if str(getattr(call.attrs, name)) not in taken
    ],
}
_RESIZE_TAKES = {
    "layout": ("NCHW",),
    "method": ("nearest_neighbor", "linear"),
    "coordinate_transformation_mode": (
        "half_pixel",
        "align_corners",
        "asymmetric",
        "pytorch_half_pixel",
        "tf_half_pixel_for_nn",
    ),
    "rounding_method": ("", "round", "round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
}


def missing_twin_ops(task: Task) -> list[str]:
    """The Relax ops of `task.mod["main"]` that have no torch twin, sorted (empty: a
    `TorchTwin(task)` can be built, attributes permitting)."""
    return sorted(_op_names(task.mod["main"]) - set(OPS))


class TorchTwin(torch.nn.Module):
    """`task.mod["main"]` run with torch ops, for any batch size (`forward`).
    Parameters carry the task's weight names (a name with dots becomes nested submodules:
    `conv1.weight`), so `state_dict()` and `torch.func.functional_call` use the task's keys;
    `weight_names` keeps the task's (layout) order. With `join_outputs` set, a model of
    several outputs returns one tensor [N, values per sample of all]: each output flattened
    per sample, in order (what packing trains such models on)."""

    join_outputs = False

    def __init__(self, task: Task) -> None:
        super().__init__()
        unsupported = missing_twin_ops(task)
        if unsupported:
            raise IntakeError(f"task '{task.name}': no torch twin for ops {unsupported}")
        func = task.mod["main"]
        _check_attrs(func, task.name)
        self.func, self.n_inputs, self.task_name = func, task.num_inputs, task.name
        self.input_shapes = [
            tuple(int(d) for d in p.ty.shape.values) for p in func.params[: self.n_inputs]
        ]
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
        out = self._outputs(*inputs)
        if self.join_outputs and isinstance(out, tuple):
            return torch.cat([y.reshape(len(y), -1) for y in out], 1)
        return out

    def _outputs(self, *inputs: torch.Tensor):
        shapes = [tuple(x.shape) for x in inputs]
        if shapes == self.input_shapes:
            return self._graph(*inputs)
        traced = {s[0] for s in self.input_shapes if s}
        batch = {s[0] for s in shapes if s}
        other_axes = [s[1:] for s in shapes] == [s[1:] for s in self.input_shapes]
        if len(traced) != 1 or len(batch) != 1 or not other_axes or not all(shapes):
            raise ValueError(
                f"task '{self.task_name}': inputs of shapes {shapes}; the graph takes "
                f"{self.input_shapes} (a batch size of its own on axis 0 of every input, the "
                "other axes as they are)"
            )
        # Another batch size than the graph's (n): groups of n samples (the last padded with
        # zeros), each through the graph as traced, vectorized by vmap. Exact for a graph
        # whose samples do not mix, as inference graphs' do not, whatever its reshapes fold.
        (b,), (n,) = batch, traced
        groups = -(-b // n)
        grouped = [
            F.pad(x, (0, 0) * (x.dim() - 1) + (0, groups * n - b)).reshape(groups, n, *x.shape[1:])
            for x in inputs
        ]
        out = torch.func.vmap(self._graph)(*grouped)

        def ungrouped(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(groups * n, *y.shape[2:])[:b]

        return tuple(map(ungrouped, out)) if isinstance(out, tuple) else ungrouped(out)

    def _graph(self, *inputs: torch.Tensor):
        params = dict(self.named_parameters())
        env = dict(zip(self.func.params[: self.n_inputs], inputs))
        env.update(zip(self.func.params[self.n_inputs :], (params[n] for n in self.weight_names)))
        for block in self.func.body.blocks:
            for binding in block.bindings:
                env[binding.var] = _evaluate(binding.value, env)
        out = _evaluate(self.func.body.body, env)
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out


def _evaluate(expr, env) -> Value:
    if isinstance(expr, relax.Var):
        return env[expr]
    if isinstance(expr, tvm.ir.GenericConst):
        return torch.from_numpy(expr.value.numpy())
    if isinstance(expr, tvm.tirx.IntImm | tvm.tirx.FloatImm):  # clip bounds, slice indices
        return expr.value
    if isinstance(expr, relax.ShapeExpr):
        return _ints(expr.values)
    if isinstance(expr, relax.Tuple):
        return tuple(_evaluate(f, env) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return _evaluate(expr.tuple_value, env)[int(expr.index)]
    return OPS[expr.op.name](*(_evaluate(a, env) for a in expr.args), expr.attrs)


def _op_names(func: relax.Function) -> set[str]:
    return {call.op.name for call in _op_calls(func)}


def _op_calls(func: relax.Function) -> list[relax.Call]:
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            calls.append(expr)

    relax.analysis.post_order_visit(func.body, visit)
    return calls


def _check_attrs(func: relax.Function, task_name: str) -> None:
    """Raise, before any forward, for op attributes the torch ops cannot honour."""
    problems = sorted(
        {
            f"{call.op.name} {problem}"
            for call in _op_calls(func)
            if call.op.name in ATTR_CHECKS
            for problem in ATTR_CHECKS[call.op.name](call)
        }
    )
    if problems:
        raise IntakeError(f"task '{task_name}': the torch twin cannot honour {problems}")
