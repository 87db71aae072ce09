"""ONNX converters the project registers over TVM's own (`with converters():` around
`from_onnx`), where TVM's emit a graph the rest of the project cannot take: TVM's Clip, Pad
and Tile become `call_tir` kernels of TOPI (`emit_te`), which have no torch twin (and Clip's
scalar bounds no Cortex-M executor argument); ours emit Relax's `maximum` / `minimum`,
`nn.pad` and `tile`; its Sum stacks its inputs and reduces, ours adds them.
TVM has no LSTM or GRU: ours unroll them over the (static) sequence into Relax matmuls and
activations, ONNX's equations (onnx.ai/onnx/operators/onnx__LSTM.html, onnx__GRU.html)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend


class Clip(onnx_frontend.OnnxOpConverter):
    """`min(max(x, low), high)` as Relax ops; a missing or NaN constant bound is no bound
    (ONNX's meaning, as ONNX Runtime reads it)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        low = relax.const(float(attr.get("min", -np.inf)), "float32")
        high = relax.const(float(attr.get("max", np.inf)), "float32")
        return cls._clip(bb, inputs[0], low, high)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        return cls._clip(bb, inputs[0], *(list(inputs[1:3]) + [None, None])[:2])

    @classmethod
    def _clip(cls, bb, x, low, high):
        for bound, op in ((low, relax.op.maximum), (high, relax.op.minimum)):
            if bound is None:
                continue
            if isinstance(bound, tvm.ir.GenericConst):
                value = bound.value.numpy()
                if np.isnan(value).any() or np.isinf(value).all():
                    continue
                dtype = str(x.ty.dtype)
                bound = relax.const(value.astype(dtype), dtype)
            x = bb.emit(op(x, bound))
        return x


class Pad(onnx_frontend.Pad):
    """Constant-mode padding by non-negative widths as Relax's `nn.pad`; other modes, and
    negative widths (a crop), as TVM converts them."""

    @classmethod
    def _lower_pad(cls, bb, inputs, attr, params, allowed_modes):
        before, after, value = cls._parse_pads_and_axes(inputs, params)
        if attr.get("mode", b"constant") != b"constant" or min(before + after) < 0:
            return super()._lower_pad(bb, inputs, attr, params, allowed_modes)
        width = [int(w) for pair in zip(before, after) for w in pair]
        return bb.emit(relax.op.nn.pad(inputs[0], width, "constant", float(value)))


class Tile(onnx_frontend.Tile):
    """Tiling by constant repeats as Relax's `tile`; computed repeats as TVM converts them."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        repeats = onnx_frontend.get_constant(inputs[1], params)
        if not isinstance(repeats, tvm.ir.GenericConst):
            return super()._impl_v13(bb, inputs, attr, params)
        return bb.emit(relax.op.tile(inputs[0], [int(r) for r in repeats.value.numpy()]))


class Sum(onnx_frontend.Sum):
    """`a + b + ...` as Relax adds, left to right (the sums TVM's stack-and-reduce computes,
    0 + a + b + ...): TVM's `sum` of a stack makes a ResNet's residual a kernel of its own
    and a copy of both tensors; adds fuse into the convolution before them."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if all(isinstance(x, tvm.ir.GenericConst) for x in inputs):
            return super()._impl_v1(bb, inputs, attr, params)
        return cls._impl_dynamic(bb, inputs)


class _Recurrent(onnx_frontend.OnnxOpConverter):
    """The unrolled recurrence shared by LSTM and GRU: per direction, the input projection of
    every step in one matmul, then one step after another (`_step`); outputs Y
    [seq, directions, batch, hidden] and the last state of each direction. Weights are
    sliced, transposed and split once per direction (constants TVM folds), not per step."""

    n_gates: int  # gate blocks in W, R and each half of B
    n_states: int  # h (GRU), or h and c (LSTM)
    defaults: tuple[str, ...]  # the activations ONNX defaults to (the only ones taken)
    refused: dict[str, object]  # attribute -> the only value taken (its default)

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * 8
        x, w, r, b, sequence_lens = inputs[:5]
        initial = inputs[5 : 5 + cls.n_states]
        problems = cls._problems(attr, sequence_lens, inputs[5 + cls.n_states])
        if problems:
            raise ValueError(f"{cls.__name__} with {', '.join(problems)} is not supported")
        hidden = int(attr["hidden_size"])
        direction = attr.get("direction", b"forward").decode()
        ways = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        seq, batch, _ = (int(d) for d in x.ty.shape.values)
        dtype = str(x.ty.dtype)
        zeros = relax.const(np.zeros((batch, hidden), dtype), dtype)
        ys, lasts = [], []
        for d, way in enumerate(ways):
            projected = bb.emit(
                relax.op.matmul(x, relax.op.permute_dims(_of_direction(w, d), [1, 0]))
            )
            r_t = relax.op.permute_dims(_of_direction(r, d), [1, 0])
            r_bias = None
            if b is not None:  # [Wb, Rb], each n_gates * hidden
                bias, width = _of_direction(b, d), cls.n_gates * hidden
                r_bias = relax.op.strided_slice(bias, [0], [width], [2 * width])
                w_bias = relax.op.strided_slice(bias, [0], [0], [width])
                projected = bb.emit(relax.op.add(projected, w_bias))
            recurrence = cls._recurrence(bb, r_t, r_bias, hidden, attr)
            state = [zeros if s is None else bb.emit(_of_direction(s, d)) for s in initial]
            outputs = [None] * seq
            for t in range(seq) if way == "forward" else reversed(range(seq)):
                step = relax.op.squeeze(relax.op.strided_slice(projected, [0], [t], [t + 1]), [0])
                state = cls._step(bb, bb.emit(step), state, recurrence)
                outputs[t] = bb.emit(relax.op.expand_dims(state[0], [0, 1]))
            ys.append(bb.emit(relax.op.concat(outputs, 0)))
            lasts.append([bb.emit(relax.op.expand_dims(s, [0])) for s in state])
        y = ys[0] if len(ys) == 1 else bb.emit(relax.op.concat(ys, 1))
        last = [v[0] if len(v) == 1 else bb.emit(relax.op.concat(list(v), 0)) for v in zip(*lasts)]
        return relax.Tuple([y, *last])

    @classmethod
    def _problems(cls, attr, sequence_lens, peepholes) -> list[str]:
        problems = ["sequence_lens"] if sequence_lens is not None else []
        problems += ["peepholes P"] if peepholes is not None else []
        activations = [a.decode() for a in attr.get("activations", [])]
        repeats = max(1, len(activations) // len(cls.defaults))  # one list per direction
        if activations and activations != list(cls.defaults) * repeats:
            problems.append(f"activations {activations}")
        return problems + [
            f"{name}={attr[name]}"
            for name, default in cls.refused.items()
            if name in attr and attr[name] != default
        ]

    @classmethod
    def _recurrence(cls, bb, r_t, r_bias, hidden, attr) -> tuple:
        """What each step multiplies the state by (and adds): one matmul for every gate."""
        return bb.emit(r_t), None if r_bias is None else bb.emit(r_bias)


def _of_direction(tensor, d: int):
    """Direction `d`'s slice of a [directions, ...] tensor."""
    return relax.op.squeeze(relax.op.strided_slice(tensor, [0], [d], [d + 1]), [0])


def _gate_sums(bb, parts, h, weight, bias, n: int) -> list:
    """`parts` (the input's contribution, n gates wide) plus the state's, split per gate."""
    state = bb.emit(_affine(h, weight, bias))
    both = [bb.emit(relax.op.split(v, n, -1)) for v in (parts, state)]
    return [
        bb.emit(relax.op.add(relax.TupleGetItem(both[0], i), relax.TupleGetItem(both[1], i)))
        for i in range(n)
    ]


class LSTM(_Recurrent):
    """Gates i, o, f, c: C = f * C + i * tanh(c), H = o * tanh(C)."""

    n_gates, n_states = 4, 2
    defaults = ("Sigmoid", "Tanh", "Tanh")
    refused = {"clip": None, "input_forget": 0, "layout": 0}

    @classmethod
    def _step(cls, bb, projected, state, recurrence):
        h, c = state
        i, o, f, g = _gate_sums(bb, projected, h, *recurrence, 4)
        i, o, f = (bb.emit(relax.op.sigmoid(v)) for v in (i, o, f))
        c = bb.emit(relax.op.add(relax.op.multiply(f, c), relax.op.multiply(i, relax.op.tanh(g))))
        return [bb.emit(relax.op.multiply(o, relax.op.tanh(c))), c]


class GRU(_Recurrent):
    """Gates z, r, h: H = (1 - z) * tanh(h) + z * H, where h's state part is
    r * (H R_h + Rb_h) (linear_before_reset, as torch exports) or (r * H) R_h + Rb_h."""

    n_gates, n_states = 3, 1
    defaults = ("Sigmoid", "Tanh")
    refused = {"clip": None, "layout": 0}

    @classmethod
    def _recurrence(cls, bb, r_t, r_bias, hidden, attr) -> tuple:
        """(R_zr, Rb_zr, R_h, Rb_h): z and r in one matmul, h's apart."""

        def columns(v, begin: int, end: int, axis: int):
            return None if v is None else bb.emit(relax.op.strided_slice(v, [axis], [begin], [end]))

        return (
            columns(r_t, 0, 2 * hidden, 1),
            columns(r_bias, 0, 2 * hidden, 0),
            columns(r_t, 2 * hidden, 3 * hidden, 1),
            columns(r_bias, 2 * hidden, 3 * hidden, 0),
            bool(attr.get("linear_before_reset", 0)),
        )

    @classmethod
    def _step(cls, bb, projected, state, recurrence):
        (h,) = state
        r_zr, rb_zr, r_h, rb_h, linear_before_reset = recurrence
        n = projected.ty.shape.values[-1] // 3
        zr = bb.emit(relax.op.strided_slice(projected, [1], [0], [2 * n]))
        x_h = bb.emit(relax.op.strided_slice(projected, [1], [2 * n], [3 * n]))
        z, r = (bb.emit(relax.op.sigmoid(v)) for v in _gate_sums(bb, zr, h, r_zr, rb_zr, 2))
        if linear_before_reset:
            state_h = relax.op.multiply(r, _affine(h, r_h, rb_h))
        else:
            state_h = _affine(relax.op.multiply(r, h), r_h, rb_h)
        candidate = bb.emit(relax.op.tanh(relax.op.add(x_h, state_h)))
        one = relax.const(1.0, str(h.ty.dtype))
        kept = relax.op.multiply(z, h)
        return [
            bb.emit(relax.op.add(relax.op.multiply(relax.op.subtract(one, z), candidate), kept))
        ]


def _affine(x, weight, bias):
    y = relax.op.matmul(x, weight)
    return y if bias is None else relax.op.add(y, bias)


CONVERTERS = {"Clip": Clip, "Pad": Pad, "Sum": Sum, "Tile": Tile, "LSTM": LSTM, "GRU": GRU}


@contextmanager
def converters() -> Iterator[None]:
    """TVM's ONNX converter map, with `CONVERTERS` in place of TVM's for these ops."""
    original = onnx_frontend._get_convert_map

    def patched():
        return {**original(), **CONVERTERS}

    onnx_frontend._get_convert_map = patched
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original
