"""VirtualizeWeights' gather: each weight read from the pool through the task's page table; tasks
not in the plan unchanged; layouts that do not fit and exclusive pages refused."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import (
    VirtualizeWeights,
)

import tvm_weightvirt as wv


@I.ir_module
class VirtualizeBefore:
    @R.function
    def task_a(x: R.Tensor((2, 30), "float32"), w: R.Tensor((4, 30), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt)
            R.output(y)
        return y


@I.ir_module
class VirtualizeExpected:
    @R.function
    def task_a(
        x: R.Tensor((2, 30), "float32"),
        pool: R.Tensor((3, 100), "float32"),
        page_table: R.Tensor((2,), "uint16"),
    ) -> R.Tensor((2, 4), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            w_ids = R.strided_slice(page_table, [0], [0], [2])
            w_pages = R.take(pool, w_ids, axis=0)
            w_flat = R.reshape(w_pages, [200])
            w_span = R.strided_slice(w_flat, [0], [0], [120])
            w = R.reshape(w_span, [4, 30])
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt)
            R.output(w, y)
        return y


@I.ir_module
class VirtualizeOtherTask:
    """task_a as in VirtualizeBefore, and task_b, which no page plan below names."""

    @R.function
    def task_a(x: R.Tensor((2, 30), "float32"), w: R.Tensor((4, 30), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt)
            R.output(y)
        return y

    @R.function
    def task_b(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.add(x, b)
            R.output(y)
        return y


def _plan_for_before() -> wv.PagePlan:
    layout = wv.PageLayout.from_weights({"w": ((4, 30), "float32")}, page_size=100)
    return wv.PagePlan(100, np.zeros((3, 100), np.float32), {"a": wv.TaskPages(layout, [2, 0])})


def test_virtualize_weights_gathers_each_weight_from_the_pool():
    """A weight of 120 floats on 2 pages of 100 becomes take -> reshape -> slice -> reshape,
    with the pool and page table as trailing parameters; num_input is unchanged."""
    after = VirtualizeWeights(_plan_for_before())(VirtualizeBefore)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, VirtualizeExpected)


def test_virtualize_weights_leaves_tasks_not_in_the_plan_unchanged():
    """Functions of tasks that the page plan does not name keep their weight parameters."""
    empty_plan = wv.PagePlan(100, np.zeros((3, 100), np.float32), {})
    after = VirtualizeWeights(empty_plan)(VirtualizeOtherTask)
    tvm.ir.assert_structural_equal(after, VirtualizeOtherTask)
    # With task a in the plan, only task_a changes.
    after = VirtualizeWeights(_plan_for_before())(VirtualizeOtherTask)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after["task_b"], VirtualizeOtherTask["task_b"])
    tvm.ir.assert_structural_equal(after["task_a"], VirtualizeExpected["task_a"])


def test_virtualize_weights_rejects_a_layout_that_does_not_fit():
    """Each weight parameter must have its layout span's shape and dtype, in layout order."""
    layout = wv.PageLayout.from_weights({"w": ((4, 31), "float32")}, page_size=100)
    plan = wv.PagePlan(100, np.zeros((3, 100), np.float32), {"a": wv.TaskPages(layout, [2, 0])})
    with pytest.raises(
        ValueError, match=r"task 'a': weight 'w' is \(4, 31\) float32 in the layout"
    ):
        VirtualizeWeights(plan)(VirtualizeBefore)


def test_virtualize_weights_refuses_exclusive_pages():
    """Fused mode gathers from the pool only: a plan with exclusive pages is refused (they
    are lowered in materialize mode, by ExclusivePageLoader)."""
    layout = wv.PageLayout.from_weights({"w": ((4, 30), "float32")}, page_size=100)
    exclusive = np.zeros((1, 100), np.float32)
    plan = wv.PagePlan(
        100, np.zeros((3, 100), np.float32), {"a": wv.TaskPages(layout, [2, 3], exclusive)}
    )
    with pytest.raises(NotImplementedError, match="ExclusivePageLoader"):
        VirtualizeWeights(plan)(VirtualizeBefore)
