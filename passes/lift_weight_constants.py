"""Lift weight constants bound in a Relax function into function parameters."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

# Ops whose constant operands are weights, and the role of each operand position.
WEIGHT_OPERANDS: dict[str, dict[int, str]] = {
    "relax.nn.conv1d": {1: "weight"},
    "relax.nn.conv2d": {1: "weight"},
    "relax.nn.conv3d": {1: "weight"},
    "relax.nn.conv1d_transpose": {1: "weight"},
    "relax.nn.conv2d_transpose": {1: "weight"},
    "relax.matmul": {0: "weight", 1: "weight"},
    "relax.nn.batch_norm": {1: "gamma", 2: "beta", 3: "mean", 4: "var"},
    "relax.nn.layer_norm": {1: "gamma", 2: "beta"},
    "relax.nn.group_norm": {1: "gamma", 2: "beta"},
    "relax.nn.prelu": {1: "alpha"},
    "relax.add": {0: "bias", 1: "bias"},
    "relax.subtract": {0: "offset", 1: "offset"},
    "relax.multiply": {0: "scale", 1: "scale"},
}
# Elementwise ops also take small constants (an epsilon, a clip bound): those stay bound.
ELEMENTWISE = {"relax.add", "relax.subtract", "relax.multiply"}


@tvm.transform.module_pass(opt_level=0, name="LiftWeightConstants")
class LiftWeightConstants:
    """Turn every bound weight constant of each Relax function into a trailing parameter.

    Some ONNX graphs compute their weights in the graph (e.g. `ConstantOfShape`), and
    `from_exported_program` binds batch-norm running statistics as constants: after
    `FoldConstant` those weights are `R.const`s. This pass makes them parameters so that every
    weight can be virtualized; their values are appended to the function's `"params"` attribute,
    where `relax.frontend.detach_params` finds them.

    A constant is a weight when it is a floating-point operand of a conv / matmul / norm op
    (see `WEIGHT_OPERANDS`), or a floating-point operand with more than one element of an
    elementwise add/subtract/multiply (a bias or a folded scale). Integer constants (shapes,
    indices) and scalars (epsilons, slopes) stay bound. A constant used twice becomes one
    parameter, named `<op>_<k>_<role>` after its first use.

    Note: run `relax.transform.FoldConstant` first so computed weights are constants.

    .. code-block:: python

        # before                                   # after
        def main(x):                               def main(x, conv2d_0_weight):
            R.func_attr({"num_input": 1})              R.func_attr({"num_input": 1,
            y = R.nn.conv2d(x, metadata[0])                         "params": [<tensor>]})
            return y                                   y = R.nn.conv2d(x, conv2d_0_weight)
                                                       return y
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            lifter = _WeightConstantLifter(mod)
            body = lifter.visit_expr(func.body)
            if not lifter.lifted:
                continue
            new_params = [var for var, _ in lifter.lifted]
            values = [tvm.runtime.tensor(const.value.numpy()) for _, const in lifter.lifted]
            attrs = dict(func.attrs) if func.attrs else {}
            attrs["params"] = list(attrs.get("params", [])) + values
            out[gv] = relax.Function(
                list(func.params) + new_params,
                body,
                func.ret_ty,
                func.is_pure,
                tvm.ir.make_node("ir.DictAttrs", **attrs),
            )
        return out


@relax.expr_functor.mutator
class _WeightConstantLifter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.lifted: list[tuple[relax.Var, tvm.ir.GenericConst]] = []
        self.op_counts: dict[str, int] = {}

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op_name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        roles = WEIGHT_OPERANDS.get(op_name)
        if roles is None:
            return call
        k = self.op_counts.get(op_name, 0)
        self.op_counts[op_name] = k + 1
        args = list(call.args)
        for i, role in roles.items():
            if i < len(args) and self._is_weight(args[i], op_name):
                args[i] = self._param_for(args[i], f"{op_name.split('.')[-1]}_{k}_{role}")
        return relax.Call(call.op, args, call.attrs, call.ty_args)

    def _is_weight(self, expr: relax.Expr, op_name: str) -> bool:
        if not isinstance(expr, tvm.ir.GenericConst):
            return False
        value = expr.value
        if not np.issubdtype(np.dtype(value.dtype), np.floating) or len(value.shape) == 0:
            return False
        return op_name not in ELEMENTWISE or int(np.prod(value.shape)) > 1

    def _param_for(self, const: tvm.ir.GenericConst, name: str) -> relax.Var:
        for var, seen in self.lifted:
            if seen.same_as(const):
                return var
        var = relax.Var(name, const.ty)
        self.lifted.append((var, const))
        return var
