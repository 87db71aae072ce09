"""Rewrite a float32 Relax function as int8 kernels with integer requantization."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, te, tirx

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # weights symmetric in [-127, 127] (no -128: its negation overflows)
MULTIPLIER_BITS = 31  # a real multiplier as m0 * 2^-n, m0 in [2^30, 2^31)
# LeakyReLU in int32: r clamped to -2^16 (r * alpha saturates int8 there for every slope
# it takes), alpha as a 15-bit multiplier, so their product stays below 2^31
LEAKY_BOUND = 1 << 16
LEAKY_MULTIPLIER_BITS = 15
LEAKY_MIN_ALPHA = (INT8_MAX - INT8_MIN + INT8_MAX) / LEAKY_BOUND
# Ops that move int8 values without computing on them: their output keeps the input's scale.
SCALE_PRESERVING = {
    "relax.nn.max_pool1d",
    "relax.nn.max_pool2d",
    "relax.reshape",
    "relax.permute_dims",
    "relax.squeeze",
    "relax.expand_dims",
    "relax.flatten",
}
# The ops that become int8 kernels: op -> (data layout, kernel layout, output-channel axis).
LINEAR = {
    "relax.nn.conv1d": ("NCW", "OIW", 1),
    "relax.nn.conv2d": ("NCHW", "OIHW", 1),
    "relax.matmul": (None, None, -1),
}
ACTIVATIONS = {"relax.nn.relu", "relax.nn.leakyrelu"}


@tvm_ffi.register_error  # raised inside the pass, it reaches the caller as itself
class QuantizeError(ValueError):
    """A graph or its calibration cannot be quantized to int8 (names the tensor at fault)."""


Range = tuple[float, float]


@dataclass(frozen=True)
class ActivationRanges:
    """The float range each tensor of a function took on calibration data: one entry per
    parameter and per binding (in the order of `bindings_of`), None for non-float32 values."""

    params: list[Range | None]
    bindings: list[Range | None]


@dataclass(frozen=True)
class QParams:
    """int8 = round(x / scale) + zero_point, clipped to [-128, 127]."""

    scale: float
    zero_point: int

    @staticmethod
    def of_range(lo: float, hi: float, what: str) -> QParams:
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero is exact: padding and ReLU need it
        if not hi > lo:
            raise QuantizeError(f"{what} is 0 on every calibration sample: no scale to give it")
        # 6 significant digits: the float32 that C source prints back exactly (TVM's C
        # codegen writes a float literal with 7), so the C kernels compute the host's bits
        scale = float(np.float32(f"{(hi - lo) / (INT8_MAX - INT8_MIN):.5e}"))
        zero_point = int(np.clip(round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
        return QParams(scale, zero_point)


def bindings_of(func: relax.Function) -> list[relax.Binding]:
    """Every binding of `func`'s body, block after block."""
    return [b for block in func.body.blocks for b in block.bindings]


@tvm.transform.module_pass(opt_level=0, name="QuantizeInt8")
class QuantizeInt8:
    """Rewrite `main` so that every conv1d / conv2d / matmul whose weight is a float32 constant
    runs on int8 activations and int8 weights with int32 sums, its bias and its ReLU /
    LeakyReLU folded into an integer requantization (TFLite's scheme: activations asymmetric
    per tensor, weights symmetric per output channel, the real multiplier as `m0 * 2^-n` in
    int64, halves rounded up).

    .. code-block:: python

        # before                              # after (x8: int8 with zero point zx; z: y's)
        c = R.nn.conv2d(x, W)                 c = R.nn.conv2d(x8, W8, out_dtype="int32")
        b = R.add(c, bias)                    r = (i64(c + B) * m0 + 2^(n-1)) >> n   # per channel
        y = R.nn.leakyrelu(b, alpha=0.2)      y8 = i8(clip(where(r < 0, alpha(r), r) + z))

    `B` is the bias in the sum's units minus `zx` times each channel's weight sum. Max pools,
    reshapes and transposes run on int8 as they are (the scale does not change). Any other op
    gets its int8 inputs dequantized and runs in float32 (an add of two branches, a softmax),
    and the function's inputs and outputs stay float32, quantized and dequantized in the graph.
    Left in float32: linear ops whose weight is not a constant, convs in other layouts.

    Note: the weights must be bound constants (`BindParams`, then `FoldConstant`, so that a
    matmul reads a transposed constant), and `ranges` come from the same function. A conv's
    zero padding becomes an explicit pad with the input's zero point.

    Parameters
    ----------
    ranges : ActivationRanges
        Each tensor's float range on calibration data (`frontend.int8.calibrate`).
    """

    def __init__(self, ranges: ActivationRanges) -> None:
        self.ranges = ranges

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = _Quantizer(mod["main"], self.ranges).module()
        for gv, func in mod.functions_items():
            if gv.name_hint != "main":
                out[gv] = func
        out = relax.transform.CanonicalizeBindings()(out)  # no `gv = lv` alias of the output
        return out.with_attrs(mod.attrs) if mod.attrs else out


@dataclass
class _Value:
    """A value of the rewritten function: its expression, its quantization when int8, and
    for a tuple its fields."""

    expr: relax.Expr | None
    qparams: QParams | None = None
    fields: list[_Value] = field(default_factory=list)


class _Quantizer:
    def __init__(self, func: relax.Function, ranges: ActivationRanges) -> None:
        self.func, self.ranges = func, ranges
        self.bindings = bindings_of(func)
        if len(ranges.bindings) != len(self.bindings) or len(ranges.params) != len(func.params):
            raise QuantizeError("the calibration ranges were taken on another function")
        self.range = {p: r for p, r in zip(func.params, ranges.params)}
        self.range |= {b.var: r for b, r in zip(self.bindings, ranges.bindings)}
        self.value = {b.var: b.value for b in self.bindings}
        self.users: dict[relax.Var, list[int]] = {}  # binding indices; -1: the function's result
        for i, b in enumerate(self.bindings):
            for v in _vars_read(b.value):
                self.users.setdefault(v, []).append(i)
        for v in _vars_read(func.body.body):
            self.users.setdefault(v, []).append(-1)
        self.bb = relax.BlockBuilder()
        self.env: dict[relax.Var, _Value] = {}
        self.quantized: dict[relax.Var, _Value] = {}  # float values quantized once

    def module(self) -> tvm.IRModule:
        """`main` rewritten, with the requantization PrimFuncs it calls."""
        params = [relax.Var(p.name, p.ty) for p in self.func.params]
        self.env = {p: _Value(new) for p, new in zip(self.func.params, params)}
        attrs = {k: v for k, v in self.func.attrs.items()} if self.func.attrs else None
        with self.bb.function("main", params, attrs):
            with self.bb.dataflow():
                consumed: set[int] = set()
                for i, binding in enumerate(self.bindings):
                    if i not in consumed:
                        consumed |= self._rewrite(i, binding)
                out = self.bb.emit_output(self._float(self._value_of(self.func.body.body)))
            self.bb.emit_func_output(out)
        return self.bb.get()

    # **** one binding ****

    def _rewrite(self, i: int, binding: relax.Binding) -> set[int]:
        """Emit `binding` (with the bias and activation bindings folded into it); returns the
        indices of the bindings it consumed."""
        value, var = binding.value, binding.var
        op = _op_name(value)
        if op in LINEAR and _linear_weight(value) is not None:
            return self._linear(i)
        if isinstance(value, relax.Tuple):
            self.env[var] = _Value(None, fields=[self._value_of(f) for f in value.fields])
        elif isinstance(value, relax.TupleGetItem) and self._value_of(value.tuple_value).fields:
            self.env[var] = self._value_of(value.tuple_value).fields[value.index]
        elif isinstance(value, relax.Var):
            self.env[var] = self._value_of(value)
        elif op in SCALE_PRESERVING and self._value_of(value.args[0]).qparams is not None:
            x = self._value_of(value.args[0])
            call = relax.Call(value.op, [x.expr, *value.args[1:]], value.attrs, value.ty_args)
            self.env[var] = _Value(self.bb.emit(call), x.qparams)
        elif isinstance(value, relax.Call):
            args = [self._float(self._value_of(a)) for a in value.args]
            self.env[var] = _Value(
                self.bb.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
            )
        else:
            raise QuantizeError(f"binding '{var.name}': cannot quantize a {type(value).__name__}")
        return {i}

    def _linear(self, i: int) -> set[int]:
        """A conv / matmul with the bias add and ReLU / LeakyReLU after it, as one int8 op and
        its requantization to the last one's calibrated range."""
        call = self.bindings[i].value
        data_layout, _, axis = LINEAR[call.op.name]
        weight = _linear_weight(call).astype(np.float64)
        channels = weight.shape[0] if axis == 1 else weight.shape[-1]
        out_ndim = len(self.bindings[i].var.ty.shape.values)
        # Step 1. The bindings folded in: a bias of one value per channel, then an activation.
        consumed, last, bias, alpha = {i}, self.bindings[i].var, np.zeros(channels), None
        nxt = self._only_user(last)
        if nxt is not None:
            found = _channel_bias(self.bindings[nxt].value, last, channels, axis % out_ndim)
            if found is not None:
                bias, last = found, self.bindings[nxt].var
                consumed.add(nxt)
                nxt = self._only_user(last)
        if nxt is not None and _op_name(self.bindings[nxt].value) in ACTIVATIONS:
            act = self.bindings[nxt].value
            if act.args[0].same_as(last):
                alpha = float(act.attrs.alpha) if "leaky" in act.op.name else 0.0
                last = self.bindings[nxt].var
                consumed.add(nxt)
                nxt = self._only_user(last)
        maximum = self.bindings[nxt].value if nxt is not None else None
        if _op_name(maximum) == "relax.maximum" and maximum.args[0].same_as(last):
            outer = self._only_user(self.bindings[nxt].var)  # a clip to the output's range
            if outer is not None and self._clip_bounds(self.bindings[outer].var) is not None:
                consumed |= {nxt, outer}  # the requantization's saturation is that clip
                last = self.bindings[outer].var
        x = self._int8(call.args[0])
        what = f"the {call.op.name[6:]} output '{last.name}'"
        out_q = QParams.of_range(*self._range_of(last), what)
        # Step 2. Weights per output channel, symmetric; the int32 bias.
        kernel_axis = 0 if axis == 1 else -1
        by_channel = np.moveaxis(weight, kernel_axis, 0)
        w = by_channel.reshape(channels, -1)
        w_scale = np.abs(w).max(axis=1) / WEIGHT_MAX
        w_scale[w_scale == 0] = 1.0
        w8 = np.clip(np.round(w / w_scale[:, None]), -WEIGHT_MAX, WEIGHT_MAX)
        bias32 = np.round(bias / (x.qparams.scale * w_scale)) - x.qparams.zero_point * w8.sum(1)
        if np.abs(bias32).max() >= 2**31:
            raise QuantizeError(f"the bias of '{last.name}' overflows int32 at its scale")
        abs_sums = np.abs(w8).sum(1)
        w8 = np.moveaxis(w8.reshape(by_channel.shape), 0, kernel_axis)
        shape = [1] * out_ndim
        shape[axis] = channels
        # Step 3. The int8 op with its int32 sums, then the requantization (one TIR
        # function, so that the multiplier stays an int32 array: a 32 x 32 -> 64-bit product).
        data = x.expr
        if data_layout is not None and any(int(p) for p in call.attrs.padding):
            data = self.bb.emit(_zero_point_pad(data, call, x.qparams.zero_point))
        acc = self.bb.emit(_int32_linear(call, data, relax.const(w8.astype(np.int8), "int8")))
        requantization = _Requantization.of(
            x.qparams.scale * w_scale / out_q.scale, out_q.zero_point, alpha, last.name
        )
        bound = (abs_sums * 255 + np.abs(bias32)) * (
            requantization.multiplier / 2.0**requantization.shift
        )
        if bound.max() >= 2**31 - 2**24:
            raise QuantizeError(f"'{last.name}': its requantized sums may overflow int32")
        m0 = requantization.multiplier
        # the bias and the rounding half in one 64-bit offset: sum * m0 stays a 32 x 32 product
        offset = bias32.astype(np.int64) * m0 + (1 << (requantization.shift - 1))
        y8 = self.bb.emit_te(
            lambda a, m, o: _requantize(a, m, o, axis % out_ndim, requantization),
            acc,
            relax.const(m0.astype(np.int32), "int32"),
            relax.const(offset, "int64"),
            primfunc_name_hint="requantize",
        )
        self.env[last] = _Value(y8, out_q)
        return consumed

    # **** values ****

    def _value_of(self, expr: relax.Expr) -> _Value:
        if isinstance(expr, relax.Var):
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return _Value(None, fields=[self._value_of(f) for f in expr.fields])
        return _Value(expr)  # constants, shapes, prim values

    def _range_of(self, var: relax.Var) -> Range:
        """A clip's bounds (a QDQ model's quantization, `frontend.onnx_qdq`), else the range
        calibrated on samples."""
        r = self._clip_bounds(var) or self.range.get(var)
        if r is None:
            raise QuantizeError(f"tensor '{var.name}' has no range: give calibration samples")
        return r

    def _clip_bounds(self, var: relax.Var) -> Range | None:
        """(lo, hi) when `var = minimum(maximum(x, lo), hi)` of scalar constants."""
        outer = self.value.get(var)
        if _op_name(outer) != "relax.minimum" or not isinstance(outer.args[0], relax.Var):
            return None
        inner = self.value.get(outer.args[0])
        if _op_name(inner) != "relax.maximum":
            return None
        lo, hi = _scalar(inner.args[1]), _scalar(outer.args[1])
        return None if lo is None or hi is None else (lo, hi)

    def _only_user(self, var: relax.Var) -> int | None:
        users = self.users.get(var, [])
        return users[0] if len(users) == 1 and users[0] >= 0 else None

    def _int8(self, arg: relax.Expr) -> _Value:
        """`arg` as int8: as it is, or its float value quantized (once per value)."""
        value = self._value_of(arg)
        if value.qparams is not None:
            return value
        if arg not in self.quantized:
            q = QParams.of_range(*self._range_of(arg), f"tensor '{arg.name}'")
            scaled = relax.op.round(relax.op.divide(value.expr, relax.const(q.scale, "float32")))
            scaled = relax.op.add(scaled, relax.const(float(q.zero_point), "float32"))
            clipped = relax.op.clip(scaled, INT8_MIN, INT8_MAX)
            self.quantized[arg] = _Value(self.bb.emit(relax.op.astype(clipped, "int8")), q)
        return self.quantized[arg]

    def _float(self, value: _Value) -> relax.Expr:
        """`value` as the float32 it stands for (dequantized when int8; tuples field by field)."""
        if value.fields:
            return relax.Tuple([self._float(f) for f in value.fields])
        if value.qparams is None:
            return value.expr
        q = value.qparams
        shifted = relax.op.subtract(
            relax.op.astype(value.expr, "float32"), relax.const(float(q.zero_point), "float32")
        )
        return self.bb.emit(relax.op.multiply(shifted, relax.const(q.scale, "float32")))


# **** helpers ****


def _op_name(expr: relax.Expr) -> str:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return ""


def _vars_read(expr: relax.Expr) -> list[relax.Var]:
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in _vars_read(a)]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _vars_read(f)]
    if isinstance(expr, relax.TupleGetItem):
        return _vars_read(expr.tuple_value)
    return []


def _constant(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


def _scalar(expr: relax.Expr) -> float | None:
    value = _constant(expr)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _linear_weight(call: relax.Call) -> np.ndarray | None:
    """The float32 constant weight of a conv / matmul this pass makes int8, else None."""
    data_layout, kernel_layout, _ = LINEAR[call.op.name]
    weight = _constant(call.args[1])
    if weight is None or weight.dtype != np.float32:
        return None
    if data_layout is None:  # matmul: [..., K] x [K, N]
        return weight if weight.ndim == 2 else None
    attrs = call.attrs
    same_layout = (
        str(attrs.data_layout) == data_layout and str(attrs.kernel_layout) == kernel_layout
    )
    out_layout = str(attrs.out_layout) in ("", data_layout)
    return weight if same_layout and out_layout else None


def _channel_bias(value: relax.Expr, var: relax.Var, channels: int, axis: int) -> np.ndarray | None:
    """The per-channel bias when `value` adds a float32 constant of one value per channel
    along `axis` to `var`, else None."""
    if _op_name(value) != "relax.add":
        return None
    a, b = value.args
    bias = _constant(b) if a.same_as(var) else _constant(a) if b.same_as(var) else None
    if bias is None or bias.dtype != np.float32 or bias.size != channels:
        return None
    ndim = len(var.ty.shape.values)
    shape = [1] * (ndim - bias.ndim) + list(bias.shape)
    if len(shape) != ndim or any(s != 1 for d, s in enumerate(shape) if d != axis):
        return None
    return bias.reshape(-1).astype(np.float64)


def _zero_point_pad(data: relax.Expr, conv: relax.Call, zero_point: int) -> relax.Expr:
    """The conv's padding as an explicit pad with the zero point (int8's zero)."""
    padding = [int(p) for p in conv.attrs.padding]
    spatial = len(padding) // 2
    width = [0, 0, 0, 0]
    for d in range(spatial):  # padding is [begin..., end...], pad takes (begin, end) per axis
        width += [padding[d], padding[d + spatial]]
    return relax.op.nn.pad(data, width, "constant", float(zero_point))


def _int32_linear(call: relax.Call, data: relax.Expr, weight: relax.Expr) -> relax.Expr:
    """`call` on int8 `data` (already padded) and `weight`, summed in int32."""
    if call.op.name == "relax.matmul":
        return relax.op.matmul(data, weight, out_dtype="int32")
    a = call.attrs
    conv = relax.op.nn.conv1d if call.op.name == "relax.nn.conv1d" else relax.op.nn.conv2d
    return conv(
        data,
        weight,
        strides=[int(s) for s in a.strides],
        padding=0,
        dilation=[int(d) for d in a.dilation],
        groups=int(a.groups),
        data_layout=str(a.data_layout),
        kernel_layout=str(a.kernel_layout),
        out_dtype="int32",
    )


@dataclass(frozen=True)
class _Requantization:
    """int32 sums to int8: r = (sum + bias) * multiplier[c] * 2^-shift, halves rounded up;
    then r, or r * alpha for r < 0 (LeakyReLU, as `(r * alpha_multiplier) >> alpha_shift`) or
    0 for r < 0 (ReLU); plus the zero point, clipped to int8."""

    multiplier: np.ndarray  # per channel, < 2^31
    shift: int
    zero_point: int
    alpha: float | None = None  # None: no activation; 0: ReLU
    alpha_multiplier: int = 0
    alpha_shift: int = 0

    @staticmethod
    def of(real: np.ndarray, zero_point: int, alpha: float | None, what: str) -> _Requantization:
        # One shift per layer (a constant: cheap on a Cortex-M), from the largest multiplier.
        exponent = int(np.frexp(real.max())[1])
        shift = min(MULTIPLIER_BITS - exponent, 62)
        multiplier = np.round(real * 2.0**shift).astype(np.int64)
        if multiplier.max() >= 1 << MULTIPLIER_BITS:
            shift -= 1
            multiplier = np.round(real * 2.0**shift).astype(np.int64)
        if shift < 1:
            raise QuantizeError(f"'{what}': a requantization multiplier of {real.max():.3g}")
        if not alpha:
            return _Requantization(multiplier, shift, zero_point, alpha)
        if not LEAKY_MIN_ALPHA <= alpha < 1:
            raise QuantizeError(
                f"'{what}': a LeakyReLU slope of {alpha} (int8 takes {LEAKY_MIN_ALPHA:.4f}..1)"
            )
        exponent = int(np.frexp(alpha)[1])  # alpha * 2^alpha_shift in [2^14, 2^15)
        alpha_shift = LEAKY_MULTIPLIER_BITS - exponent
        alpha_multiplier = round(alpha * 2.0**alpha_shift)
        return _Requantization(multiplier, shift, zero_point, alpha, alpha_multiplier, alpha_shift)


def _requantize(
    acc: te.Tensor, m0: te.Tensor, offset: te.Tensor, axis: int, rq: _Requantization
) -> te.Tensor:
    """int8 outputs of int32 sums `acc`, per channel along `axis` (`_Requantization`; `offset`
    = bias * m0 + 2^(shift - 1))."""

    def element(*i: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
        c = i[axis]
        product = tirx.Cast("int64", acc[i]) * tirx.Cast("int64", m0[c]) + offset[c]
        r = tirx.Cast("int32", product >> rq.shift)
        if rq.alpha == 0.0:
            r = tirx.max(r, 0)
        elif rq.alpha is not None:
            clamped = tirx.max(r, -LEAKY_BOUND)
            half = tirx.const(1 << (rq.alpha_shift - 1), "int32")
            negative = (clamped * rq.alpha_multiplier + half) >> rq.alpha_shift
            r = tirx.Select(r < 0, negative, r)
        return tirx.Cast("int8", tirx.min(tirx.max(r + rq.zero_point, INT8_MIN), INT8_MAX))

    return te.compute(acc.shape, element, name="requantize")
