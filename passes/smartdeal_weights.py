"""Compute SmartDeal-encoded weights in the program: decode(codes) @ basis, reshaped."""

from __future__ import annotations

import tvm
from tvm import relax

from tvm_weightvirt.smartdeal import Encoding


@tvm.transform.module_pass(opt_level=0, name="SmartDealWeights")
class SmartDealWeights:
    """Replace each encoded weight parameter of `main` by two parameters, its power-of-two codes
    (int8, 0 = zero, else sign * (exponent + 64)) and its 3x3 bases, and compute the weight:
    decode -> batched matmul with the bases -> the real rows -> (drop row padding) -> reshape.
    Weights without an encoding are left as they are. `num_input` is unchanged, so
    `relax.transform.LiftTransformParams` can move the decode out of the inference path.

    Parameters
    ----------
    encodings : dict[str, Encoding]
        Weight parameter name (the Relax parameter's name) -> its encoding.

    .. code-block:: python

        # before                                # after
        def main(x, w: R.Tensor((8, 30))):      def main(x, w_codes: R.Tensor((8, 11, 3), "int8"),
            y = R.matmul(x, R.permute_dims(w))           w_bases: R.Tensor((8, 3, 3))):
                                                    c = decode(w_codes)          # +-2^e or 0
                                                    w = reshape(take(reshape(matmul(c, w_bases),
                                                                [88, 3]), rows), [8, 33])[:, :30]
                                                    y = R.matmul(x, R.permute_dims(w))
    """

    def __init__(self, encodings: dict[str, Encoding]) -> None:
        self.encodings = encodings

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = mod["main"]
        n_in = int(func.attrs["num_input"])
        missing = sorted(set(self.encodings) - {p.name for p in func.params[n_in:]})
        if missing:
            raise ValueError(f"encodings for {missing}, which are not weight parameters of main")
        bb = relax.BlockBuilder()
        params, bindings = list(func.params[:n_in]), []
        for param in func.params[n_in:]:
            encoding = self.encodings.get(param.name)
            if encoding is None:
                params.append(param)
                continue
            codes = relax.Var(f"{param.name}_codes", relax.TensorType(encoding.codes.shape, "int8"))
            bases = relax.Var(
                f"{param.name}_bases", relax.TensorType(encoding.bases.shape, "float32")
            )
            params.extend([codes, bases])
            bindings.extend(_decode_bindings(bb, param, encoding, codes, bases))
        body = func.body
        new_body = relax.SeqExpr([relax.DataflowBlock(bindings)] + list(body.blocks), body.body)
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        out["main"] = relax.Function(params, new_body, func.ret_ty, func.is_pure, func.attrs)
        return relax.transform.Normalize()(out)


def _decode_bindings(bb, weight, encoding: Encoding, codes, bases) -> list[relax.VarBinding]:
    op = relax.op
    n_blocks, rows, _ = encoding.codes.shape
    per_filter = len(encoding.row_index) * 3 // encoding.shape[0]
    # (name, make(named vars so far)): one op each, so every binding is in normal form
    steps = [
        ("codes_f32", lambda v: op.astype(codes, "float32")),
        ("abs_codes", lambda v: op.abs(v["codes_f32"])),
        ("exponent", lambda v: op.subtract(v["abs_codes"], relax.const(64.0))),
        ("magnitude", lambda v: op.power(relax.const(2.0), v["exponent"])),
        ("sign", lambda v: op.sign(v["codes_f32"])),
        ("signed", lambda v: op.multiply(v["sign"], v["magnitude"])),
        ("is_zero", lambda v: op.equal(codes, relax.const(0, "int8"))),
        ("coefficients", lambda v: op.where(v["is_zero"], relax.const(0.0), v["signed"])),
        ("products", lambda v: op.matmul(v["coefficients"], bases)),
        ("rows", lambda v: op.reshape(v["products"], [n_blocks * rows, 3])),
        ("real_rows", lambda v: op.take(v["rows"], relax.const(encoding.row_index), axis=0)),
        ("per_filter", lambda v: op.reshape(v["real_rows"], [encoding.shape[0], per_filter])),
    ]
    last = "per_filter"
    if encoding.kind == "rows":
        steps.append(
            (
                "unpadded",
                lambda v: op.strided_slice(v["per_filter"], [1], [0], [per_filter - encoding.pad]),
            )
        )
        last = "unpadded"
    bindings, named = [], {}
    for suffix, make in steps:
        call = bb.normalize(make(named))
        named[suffix] = relax.DataflowVar(f"{weight.name}_{suffix}", call.ty)
        bindings.append(relax.VarBinding(named[suffix], call))
    reshape = bb.normalize(op.reshape(named[last], list(encoding.shape)))
    bindings.append(relax.VarBinding(weight, reshape))
    return bindings
