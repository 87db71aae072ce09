"""libm calls for the TIR math intrinsics that TVM's C codegen leaves unresolved
("Unresolved call tirx.fabs": `abs` of a float, in Softplus and Mish as ONNX writes them).
Registered for the "c" target once, on import, beside TVM's own rules."""

from __future__ import annotations

import tvm
from tvm.tirx import call_pure_extern, register_intrin_lowering


def _libm(name: str):
    """The float32 (`<name>f`) or float64 (`<name>`) libm function of an intrinsic."""

    def lower(op):
        dtype = str(op.ty.dtype)
        if dtype not in ("float32", "float64"):
            return op
        return call_pure_extern(op.ty, name + ("f" if dtype == "float32" else ""), *op.args)

    return lower


def _isinf(op):
    (x,) = op.args
    infinity = tvm.tirx.const(float("inf"), str(x.ty.dtype))
    return tvm.tirx.Or(x == infinity, x == -infinity)


for _name in ("fabs", "fmod", "exp2"):
    register_intrin_lowering(f"tirx.{_name}", target="c", f=_libm(_name), level=99)
register_intrin_lowering("tirx.isinf", target="c", f=_isinf, level=99)
