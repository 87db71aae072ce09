"""LiftWeightConstants' choice of weights: the float operands of weight ops become trailing
parameters; a function without weights is unchanged."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import (
    LiftWeightConstants,
)

LIFT_W = np.arange(8, dtype=np.float32).reshape(4, 2)
LIFT_B = np.array([0.5, -0.5], np.float32)


@I.ir_module
class LiftBefore:
    @R.function
    def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 2), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.matmul(x, R.const(LIFT_W))
            z = R.add(y, R.const(LIFT_B))
            R.output(z)
        return z


@I.ir_module
class LiftExpected:
    @R.function
    def main(
        x: R.Tensor((2, 4), "float32"),
        matmul_0_weight: R.Tensor((4, 2), "float32"),
        add_0_bias: R.Tensor((2,), "float32"),
    ) -> R.Tensor((2, 2), "float32"):
        R.func_attr(
            {"num_input": 1, "params": [tvm.runtime.tensor(LIFT_W), tvm.runtime.tensor(LIFT_B)]}
        )
        with R.dataflow():
            y = R.matmul(x, matmul_0_weight)
            z = R.add(y, add_0_bias)
            R.output(z)
        return z


@I.ir_module
class LiftNoWeights:
    """Constants that are not weights: a scalar slope, a one-element offset, integer indices."""

    @R.function
    def main(x: R.Tensor((2, 4), "float32")) -> R.Tensor((2, 2), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.multiply(x, R.const(0.2, "float32"))
            z = R.add(y, R.const(np.array([1.0], np.float32)))
            t = R.take(z, R.const(np.array([0, 3], np.int64)), axis=1)
            R.output(t)
        return t


def test_lift_weight_constants_makes_weights_trailing_parameters():
    """Each float weight constant (a matmul operand, a multi-element bias) becomes a trailing
    parameter named `<op>_<k>_<role>`, its value appended to the "params" attribute;
    num_input is unchanged."""
    after = LiftWeightConstants()(LiftBefore)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, LiftExpected)


def test_lift_weight_constants_leaves_a_function_without_weights_unchanged():
    """Scalars, one-element elementwise constants and integer constants stay bound: a function
    with no other constant is not touched."""
    after = LiftWeightConstants()(LiftNoWeights)
    tvm.ir.assert_structural_equal(after, LiftNoWeights)


def test_lift_weight_constants_lifts_weights_only():
    """A matmul weight and a bias become parameters (values in "params"); an integer index
    constant and a scalar slope stay bound."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(30, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    x = relax.Var("x", relax.TensorType((2, 30), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(w)))
            y = bb.emit(relax.op.add(y, relax.const(b)))
            y = bb.emit(relax.op.multiply(y, relax.const(0.2, "float32")))
            y = bb.emit(relax.op.take(y, relax.const(np.array([0, 3], np.int64)), axis=1))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    after = LiftWeightConstants()(bb.get())
    relax.analysis.well_formed(after)
    func = after["main"]
    assert [p.name for p in func.params] == ["x", "matmul_0_weight", "add_0_bias"]
    params = func.attrs["params"]
    np.testing.assert_array_equal(params[0].numpy(), w)
    np.testing.assert_array_equal(params[1].numpy(), b)
    mod, detached = relax.frontend.detach_params(after)
    assert len(detached["main"]) == 2
