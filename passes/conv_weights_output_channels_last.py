"""Give convolutions their weights with the output channel last, the layout a CPU kernel reads
as contiguous vectors of output channels (see `compile/cpu_schedule.py`)."""

from __future__ import annotations

import tvm
from tvm import relax

# the OI... layout the frontends produce -> the same dims with O last, and the permutation
LAYOUTS = {
    "relax.nn.conv1d": ("NCW", "OIW", "WIO", [2, 1, 0]),
    "relax.nn.conv2d": ("NCHW", "OIHW", "HWIO", [2, 3, 1, 0]),
}


@tvm.transform.module_pass(opt_level=0, name="ConvWeightsOutputChannelsLast")
class ConvWeightsOutputChannelsLast:
    """Every 1-D and 2-D convolution with data NC..., kernel OI... and one group reads its
    weight as ...IO: `conv(x, w)` becomes `conv(x, permute_dims(w), kernel_layout=...IO)`.
    The permute depends on the weight alone, so `LiftWeightTransforms` moves it out of the
    inference (into the context switch). Same arithmetic in the same order: the outputs are
    unchanged. Grouped and depthwise convolutions, and other layouts, are left as they are.

    .. code-block:: python

        # before                                # after
        y = R.nn.conv2d(x, w)                   wt = R.permute_dims(w, axes=[2, 3, 1, 0])
                                                y = R.nn.conv2d(x, wt, kernel_layout="HWIO")
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                out[gv] = _Rewriter(mod).visit_expr(func)
        return out


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        if op not in LAYOUTS:
            return call
        data_layout, kernel_layout, new_layout, axes = LAYOUTS[op]
        attrs = call.attrs
        if (
            attrs.data_layout != data_layout
            or attrs.kernel_layout != kernel_layout
            or (attrs.out_layout or data_layout) != data_layout
            or int(attrs.groups) != 1
        ):
            return call
        weight = self.builder_.emit(relax.op.permute_dims(call.args[1], axes))
        conv = relax.op.nn.conv1d if op == "relax.nn.conv1d" else relax.op.nn.conv2d
        return conv(
            call.args[0],
            weight,
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=1,
            data_layout=data_layout,
            kernel_layout=new_layout,
            out_layout=data_layout,
            out_dtype=attrs.out_dtype,
        )
