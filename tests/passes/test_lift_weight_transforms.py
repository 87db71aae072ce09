"""LiftWeightTransforms' split: weight-only ops move into the switch function; none when no op
depends on weights alone; no output bit changes."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import (
    LiftWeightTransforms,
)


@I.ir_module
class TransformBefore:
    @R.function
    def task_a(
        x: R.Tensor((1, 3), "float32"), w: R.Tensor((4, 3), "float32"), b: R.Tensor((4,), "float32")
    ) -> R.Tensor((1, 4), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt)
            z = R.add(y, b)
            R.output(z)
        return z

    @R.function
    def helper(x: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 3), "float32"):
        return x  # no num_input: not a task, nothing lifted


@I.ir_module
class TransformExpected:
    @R.function
    def task_a(
        x: R.Tensor((1, 3), "float32"),
        b: R.Tensor((4,), "float32"),
        wt: R.Tensor((3, 4), "float32"),
    ) -> R.Tensor((1, 4), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.matmul(x, wt)
            z = R.add(y, b)
            R.output(z)
        return z

    @R.function
    def wv_transform_task_a(
        model_params: R.Tuple(R.Tensor((4, 3), "float32"), R.Tensor((4,), "float32")),
    ) -> R.Tuple(R.Tensor((4,), "float32"), R.Tensor((3, 4), "float32")):
        R.func_attr({"num_input": 0})
        with R.dataflow():
            w = model_params[0]
            wt = R.permute_dims(w, axes=[1, 0])
            b = model_params[1]
            output_tuple = (b, wt)
            R.output(output_tuple)
        return output_tuple

    @R.function
    def helper(x: R.Tensor((1, 3), "float32")) -> R.Tensor((1, 3), "float32"):
        return x


def test_lift_weight_transforms_moves_weight_only_ops_into_the_switch_function():
    """The weight transpose moves to `wv_transform_task_a(weights)`, which returns what the task
    now takes after its input (the bias untouched, the transposed weight); a function without
    `num_input` is left alone."""
    after = LiftWeightTransforms()(TransformBefore)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, TransformExpected)


def test_lift_weight_transforms_changes_no_output_bit():
    """The lifted module, transform then task, gives the same bits as the module before."""
    rng = np.random.default_rng(0)
    x, w, b = (rng.normal(size=s).astype("float32") for s in [(1, 3), (4, 3), (4,)])
    target = tvm.target.Target("llvm")
    before = relax.VirtualMachine(tvm.compile(TransformBefore, target), tvm.cpu())
    after = relax.VirtualMachine(tvm.compile(TransformExpected, target), tvm.cpu())
    weights = after["wv_transform_task_a"]([tvm.runtime.tensor(w), tvm.runtime.tensor(b)])
    expected = before["task_a"](*map(tvm.runtime.tensor, (x, w, b))).numpy()
    np.testing.assert_array_equal(
        after["task_a"](tvm.runtime.tensor(x), *weights).numpy(), expected
    )
