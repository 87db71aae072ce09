"""NormalizeTakeIndices: constant indices non-negative, computed ones wrapping; in-range constants
and checked modes unchanged; an index outside its axis refused."""

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import (
    NormalizeTakeIndices,
)
from tvm_weightvirt.passes.normalize_take_indices import TakeIndexError


@I.ir_module
class TakeBefore:
    @R.function
    def main(x: R.Tensor((2, 4, 8), "float32"), ids: R.Tensor((3,), "int64")):
        with R.dataflow():
            last = R.take(x, R.const(-1, "int64"), axis=2, mode="fast")
            picked = R.take(x, R.const(np.array([0, -4], "int64")), axis=1, mode="fast")
            looked_up = R.take(x, ids, axis=2, mode="fast")
            R.output(last, picked, looked_up)
        return (last, picked, looked_up)


@I.ir_module
class TakeExpected:
    @R.function
    def main(x: R.Tensor((2, 4, 8), "float32"), ids: R.Tensor((3,), "int64")):
        with R.dataflow():
            last = R.take(x, R.const(7, "int64"), axis=2, mode="fast")
            picked = R.take(x, R.const(np.array([0, 0], "int64")), axis=1, mode="fast")
            looked_up = R.take(x, ids, axis=2, mode="wrap")
            R.output(last, picked, looked_up)
        return (last, picked, looked_up)


def test_normalize_take_indices():
    tvm.ir.assert_structural_equal(NormalizeTakeIndices()(TakeBefore), TakeExpected)


def test_normalize_take_indices_leaves_non_negative_constants_and_checked_modes():
    tvm.ir.assert_structural_equal(NormalizeTakeIndices()(TakeExpected), TakeExpected)


def test_a_constant_index_outside_its_axis_is_refused():
    @I.ir_module
    class OutOfRange:
        @R.function
        def main(x: R.Tensor((2, 4), "float32")):
            y = R.take(x, R.const(-5, "int64"), axis=1)
            return y

    with pytest.raises(
        TakeIndexError, match=r"take of axis 1 \(size 4\) at constant indices \[-5\]"
    ):
        NormalizeTakeIndices()(OutOfRange)
