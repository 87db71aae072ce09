"""Statistics are not weights: fold inference batch norms at intake, so no running mean or
variance is ever paged, matched or shared (a shared variance can go negative: NaN).

An inference batch norm is the per-channel affine `x * s + t`, `s = gamma / sqrt(var + eps)`,
`t = beta - mean * s`. `fold_batch_norms` rewrites each one whose four operands are weights:

- after a convolution (with or without a bias add) whose output and weight it alone reads,
  into the convolution: its weight scaled per output channel by `s`, its bias `b * s + t` (or
  a new bias `t`, under beta's name): the batch norm's four weights are gone;
- otherwise into `x * gamma' + beta'` with `gamma' = s` and `beta' = t`, shaped to broadcast
  along the batch norm's axis: two trained weights, no statistics.

Both are exact in real arithmetic; in float32 the outputs move by rounding (~1e-7 relative).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

_CONVS = {"relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d"}


def fold_batch_norms(
    func: relax.Function, weights: dict[str, np.ndarray]
) -> tuple[relax.Function, dict[str, np.ndarray]]:
    """`func` (`main(inputs..., weights...)`, weight parameters named as `weights`' keys) with
    every inference batch norm over weight operands folded, and the weights it then takes."""
    n_in = len(func.params) - len(weights)
    params = {p: name for p, name in zip(func.params[n_in:], weights)}
    bindings = relax.analysis.get_var2val(func)
    uses = _use_counts(func)
    folder = _Folder(params, dict(weights), bindings, uses)
    body = folder.visit_expr(func.body)
    if not folder.folded:
        return func, weights
    weight_params = [folder.replaced.get(p, p) for p in func.params[n_in:]]
    folded = relax.Function(
        list(func.params[:n_in]) + weight_params, body, func.ret_ty, func.is_pure, func.attrs
    )
    folded = relax.analysis.remove_all_unused(folded)
    used = set(relax.analysis.free_vars(folded.body))
    kept = [p for p in weight_params if p in used]
    folded = relax.Function(
        list(func.params[:n_in]) + kept, folded.body, func.ret_ty, func.is_pure, func.attrs
    )
    names = {folder.replaced.get(p, p): name for p, name in params.items()}
    return folded, {names[p]: folder.values[names[p]] for p in kept}


def _use_counts(func: relax.Function) -> dict[relax.Var, int]:
    counts: dict[relax.Var, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def __init__(self, params, values, bindings, uses) -> None:
        super().__init__()
        self.params, self.values, self.bindings, self.uses = params, values, bindings, uses
        self.replaced: dict[relax.Var, relax.Var] = {}  # a parameter -> its reshaped self
        self.folded = 0

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        bn = self.bindings.get(op.tuple_value) if isinstance(op.tuple_value, relax.Var) else None
        if int(op.index) != 0 or not self._foldable(bn):
            return super().visit_tuple_getitem_(op)
        self.folded += 1
        return self._fold(bn)

    def _foldable(self, call) -> bool:
        return (
            isinstance(call, relax.Call)
            and isinstance(call.op, tvm.ir.Op)
            and call.op.name == "relax.nn.batch_norm"
            and not bool(call.attrs.training)
            and all(a in self.params and self.uses.get(a, 0) == 1 for a in call.args[1:5])
        )

    def _fold(self, bn: relax.Call) -> relax.Expr:
        x, gamma, beta, mean, var = bn.args
        attrs = bn.attrs
        ndim = x.ty.ndim
        axis = int(attrs.axis) % ndim
        v = self.values
        s = 1.0 / np.sqrt(v[self.params[var]].astype(np.float64) + float(attrs.epsilon))
        if bool(attrs.scale):
            s = s * v[self.params[gamma]]
        t = -v[self.params[mean]] * s
        if bool(attrs.center):
            t = t + v[self.params[beta]]
        broadcast = (-1,) + (1,) * (ndim - axis - 1)
        conv, bias = self._conv_and_bias(x)
        x = self.visit_expr(x)
        if conv is not None and axis == 1:
            w = self.params[conv.args[1]]
            out_axis = str(conv.attrs.kernel_layout).index("O")
            shape = [1] * v[w].ndim
            shape[out_axis] = -1
            v[w] = (v[w] * s.reshape(shape)).astype(v[w].dtype)
            if bias is not None:
                b = self.params[bias]
                v[b] = (v[b].reshape(-1) * s + t).reshape(v[b].shape).astype(v[b].dtype)
                return x
            return relax.op.add(x, self._set(beta, t.reshape(broadcast)))
        scaled = relax.op.multiply(x, self._set(gamma, s.reshape(broadcast)))
        return relax.op.add(scaled, self._set(beta, t.reshape(broadcast)))

    def _conv_and_bias(self, x):
        """(conv, bias parameter) when `x` is `conv(., W)` or `conv(., W) + b` (b, or a reshape of
        it) and the batch norm alone reads `x`, the convolution and its weight; else (None, None)."""
        if self.uses.get(x, 0) != 1:
            return None, None
        value, bias = self.bindings.get(x), None
        if _is_op(value, "relax.add"):
            a, b = value.args
            if not self._is_conv(a):
                a, b = b, a
            if _is_op(self.bindings.get(b), "relax.reshape") and self.uses.get(b, 0) == 1:
                b = self.bindings[b].args[0]
            if not self._is_conv(a) or b not in self.params or self.uses.get(b, 0) != 1:
                return None, None
            value, bias = self.bindings[a], b
        if not self._is_conv_call(value):
            return None, None
        return value, bias

    def _is_conv(self, var) -> bool:
        return self.uses.get(var, 0) == 1 and self._is_conv_call(self.bindings.get(var))

    def _is_conv_call(self, value) -> bool:
        return (
            isinstance(value, relax.Call)
            and isinstance(value.op, tvm.ir.Op)
            and value.op.name in _CONVS
            and value.args[1] in self.params
            and self.uses.get(value.args[1], 0) == 1
        )

    def _set(self, param: relax.Var, value: np.ndarray) -> relax.Var:
        """`param` holding `value` (float32): a new parameter of the same name where its shape
        changes."""
        name = self.params[param]
        self.values[name] = value.astype(np.float32)
        new = relax.Var(param.name, relax.TensorType(value.shape, "float32"))
        self.replaced[param] = new
        return new


def _is_op(value, name: str) -> bool:
    return (
        isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name
    )
