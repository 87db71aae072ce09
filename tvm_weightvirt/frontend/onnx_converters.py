"""ONNX converters the project registers over TVM's own (`with converters():` around
`from_onnx`), where TVM's emit a graph the rest of the project cannot take: TVM's Clip and
Pad become `call_tir` kernels of TOPI (`emit_te`), which have no torch twin (and Clip's scalar
bounds no Cortex-M executor argument); ours emit Relax's `maximum` / `minimum` and `nn.pad`."""

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


CONVERTERS = {"Clip": Clip, "Pad": Pad}


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
