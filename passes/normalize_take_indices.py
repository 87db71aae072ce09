"""Make every `relax.take` compute what its graph means for negative indices."""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax


@tvm_ffi.register_error  # raised inside the visitor, it reaches the caller as itself
class TakeIndexError(ValueError):
    """A constant index of a `take` lies outside its axis."""


@tvm.transform.module_pass(opt_level=0, name="NormalizeTakeIndices")
class NormalizeTakeIndices:
    """`relax.take(x, indices, axis, mode="fast")` reads `x` at `indices` unchecked: an index of
    -1 (torch's `x[..., -1]`, exported so) reads before the tensor, silently. This pass gives
    constant indices as non-negative constants (`i % n` for `-n <= i < 0`; outside `[-n, n)` it
    raises `TakeIndexError` naming the op) and makes a `take` of computed indices in "fast"
    mode wrap (`i % n`: Python's meaning of an index in `[-n, n)`).

    .. code-block:: python

        # before                                       # after
        y = R.take(x, R.const(-1, "int64"), axis=2)    y = R.take(x, R.const(31, "int64"), axis=2)
        e = R.take(table, ids, axis=0, mode="fast")    e = R.take(table, ids, axis=0, mode="wrap")
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                out[gv] = _TakeNormalizer(mod).visit_expr(func)
        return out


@relax.expr_functor.mutator
class _TakeNormalizer(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.take"):
            return call
        x, indices = call.args
        axis = call.attrs.axis
        if isinstance(indices, tvm.ir.GenericConst):
            shape = [int(d) for d in x.ty.shape.values]
            n = int(np.prod(shape)) if axis is None else shape[int(axis) % len(shape)]
            values = indices.value.numpy()
            if ((values < -n) | (values >= n)).any():
                raise TakeIndexError(
                    f"take of axis {axis} (size {n}) at constant indices "
                    f"{sorted(set(values[(values < -n) | (values >= n)].ravel().tolist()))}: "
                    "outside the axis"
                )
            if (values >= 0).all():
                return call
            fixed = relax.const(np.where(values < 0, values + n, values), str(values.dtype))
            return relax.op.take(x, fixed, axis, str(call.attrs.mode))
        if str(call.attrs.mode) == "fast":
            return relax.op.take(x, indices, axis, "wrap")
        return call
