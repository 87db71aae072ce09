"""Store each weight in the layout its kernel reads, so that no weight-only permute is left to
run at a context switch (what a switch that maps pages instead of copying them needs)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .conv_weights_output_channels_last import ConvWeightsOutputChannelsLast

_PERMUTE = tvm.ir.Op.get("relax.permute_dims")


def kernel_layout_axes(func: relax.Function) -> dict[int, list[int]]:
    """The weight parameters (by position after `num_input`) that `func` reads only through
    `permute_dims(w, axes)`, all with the same axes, and those axes; `axes=None` (reverse) is
    spelled out. A weight with any other use (a matmul, a tuple, the result) is not listed."""
    weights = func.params[int(func.attrs["num_input"]) :]
    uses = _WeightUses({p: list(range(p.ty.ndim))[::-1] for p in weights})
    uses.visit_expr(func.body)
    return {
        i: axes[0]
        for i, p in enumerate(weights)
        if (axes := uses.permutes.get(p))
        and p not in uses.other
        and all(a == axes[0] for a in axes)
    }


@tvm.transform.module_pass(opt_level=0, name="WeightsInKernelLayout")
class WeightsInKernelLayout:
    """Every Relax function with `num_input` takes, for each weight it reads only through
    `permute_dims(w, axes)` with one `axes` (dense weights transposed for the matmul;
    convolution weights after `ConvWeightsOutputChannelsLast`, which this pass runs first),
    the permuted weight as its parameter instead, under the same name. The arithmetic is unchanged; the weights given
    to the function must be permuted alike (`permute_weights`).

    .. code-block:: python

        # before                                # after
        def main(x, w: R.Tensor((4, 30))):      def main(x, w: R.Tensor((30, 4))):
            wt = R.permute_dims(w)                  y = R.matmul(x, w)
            y = R.matmul(x, wt)                     return y
            return y
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = ConvWeightsOutputChannelsLast()(mod)
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function) and "num_input" in (func.attrs or {}):
                out[gv] = _in_kernel_layout(func)
        return relax.transform.CanonicalizeBindings()(out)


def permute_weights(
    weights: dict[str, np.ndarray], axes: dict[int, list[int]]
) -> dict[str, np.ndarray]:
    """`weights` (in parameter order) as `WeightsInKernelLayout` has the function take them:
    the weights `kernel_layout_axes` lists permuted, contiguous; the others as given."""
    return {
        name: np.ascontiguousarray(w.transpose(axes[i])) if i in axes else w
        for i, (name, w) in enumerate(weights.items())
    }


def _in_kernel_layout(func: relax.Function) -> relax.Function:
    axes = kernel_layout_axes(func)
    if not axes:
        return func
    n_inputs = int(func.attrs["num_input"])
    replaced, params = {}, []
    for i, p in enumerate(func.params):
        if i - n_inputs in axes:
            shape = [p.ty.shape.values[a] for a in axes[i - n_inputs]]
            new = relax.Var(p.name, relax.TensorType(shape, p.ty.dtype))
            replaced[p] = new
            params.append(new)
        else:
            params.append(p)
    body = _DropPermutes(replaced).visit_expr(func.body)
    return relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs)


@relax.expr_functor.visitor
class _WeightUses(relax.PyExprVisitor):
    """Per weight parameter: the axes of each `permute_dims` that reads it (`permutes`), and
    whether anything else reads it (`other`)."""

    def __init__(self, reversed_axes: dict[relax.Var, list[int]]) -> None:
        super().__init__()
        self.reversed_axes = reversed_axes
        self.permutes: dict[relax.Var, list[list[int]]] = {}
        self.other: set[relax.Var] = set()

    def visit_call_(self, call: relax.Call) -> None:
        arg = call.args[0] if call.args else None
        if call.op.same_as(_PERMUTE) and arg in self.reversed_axes:
            given = call.attrs.axes
            axes = self.reversed_axes[arg] if given is None else [int(a) for a in given]
            self.permutes.setdefault(arg, []).append(axes)
            for other_arg in call.args[1:]:
                self.visit_expr(other_arg)
            return
        super().visit_call_(call)

    def visit_var_(self, var: relax.Var) -> None:
        if var in self.reversed_axes:
            self.other.add(var)


@relax.expr_functor.mutator
class _DropPermutes(relax.PyExprMutator):
    """`permute_dims(w)` of a replaced weight becomes the (already permuted) new parameter."""

    def __init__(self, replaced: dict[relax.Var, relax.Var]) -> None:
        super().__init__()
        self.replaced = replaced

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if call.op.same_as(_PERMUTE) and call.args[0] in self.replaced:
            return self.replaced[call.args[0]]
        return super().visit_call_(call)
