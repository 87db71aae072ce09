"""The passes' IR rules: VirtualizeWeights' gather, MergeTasks' renaming and kernel dedup,
LiftWeightConstants' choice of weights."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import LiftWeightConstants, MergeTasks, VirtualizeWeights

import tvm_weightvirt as wv
from tvm_weightvirt import examples


@I.ir_module
class Before:
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
class Expected:
    @R.function
    def task_a(
        x: R.Tensor((2, 30), "float32"),
        pool: R.Tensor((3, 100), "float32"),
        page_table: R.Tensor((2,), "int32"),
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


def _plan_for_before() -> wv.PagePlan:
    layout = wv.PageLayout.from_weights({"w": ((4, 30), "float32")}, page_size=100)
    return wv.PagePlan(100, np.zeros((3, 100), np.float32), {"a": wv.TaskPages(layout, [2, 0])})


def test_virtualize_weights_gathers_each_weight_from_the_pool():
    """A weight of 120 floats on 2 pages of 100 becomes take -> reshape -> slice -> reshape,
    with the pool and page table as trailing parameters; num_input is unchanged."""
    after = VirtualizeWeights(_plan_for_before())(Before)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, Expected)


def test_virtualize_weights_rejects_a_layout_that_does_not_fit():
    layout = wv.PageLayout.from_weights({"w": ((4, 31), "float32")}, page_size=100)
    plan = wv.PagePlan(100, np.zeros((3, 100), np.float32), {"a": wv.TaskPages(layout, [2, 0])})
    with pytest.raises(
        ValueError, match=r"task 'a': weight 'w' is \(4, 31\) float32 in the layout"
    ):
        VirtualizeWeights(plan)(Before)


def test_virtualize_weights_rejects_exclusive_pages_until_they_can_be_lowered():
    layout = wv.PageLayout.from_weights({"w": ((4, 30), "float32")}, page_size=100)
    exclusive = np.zeros((1, 100), np.float32)
    plan = wv.PagePlan(
        100, np.zeros((3, 100), np.float32), {"a": wv.TaskPages(layout, [2, 3], exclusive)}
    )
    with pytest.raises(NotImplementedError, match="ExclusivePageLoader"):
        VirtualizeWeights(plan)(Before)


def _legalized(kind: str, seed: int) -> tvm.IRModule:
    model, x = examples.torch_model(kind, seed)
    return relax.transform.LegalizeOps()(wv.Task.from_torch(model, (x,), name=kind).mod)


def _prim_funcs(mod: tvm.IRModule) -> list[str]:
    return sorted(
        gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    )


def test_merge_tasks_renames_and_deduplicates_kernels():
    """Two tasks of the same architecture share every kernel; a third adds only its own."""
    cnn_a, cnn_b, mlp = _legalized("cnn2d", 0), _legalized("cnn2d", 1), _legalized("mlp", 2)
    merged = MergeTasks({"a": cnn_a, "b": cnn_b, "m": mlp})(tvm.IRModule())
    relax.analysis.well_formed(merged)
    n_cnn, n_mlp = len(_prim_funcs(cnn_a)), len(_prim_funcs(mlp))
    relax_funcs = sorted(
        gv.name_hint for gv, f in merged.functions_items() if isinstance(f, relax.Function)
    )
    assert relax_funcs == ["task_a", "task_b", "task_m"]
    kernels = _prim_funcs(merged)
    assert all(k.startswith("a_") for k in kernels[:n_cnn])
    assert not any(k.startswith("b_") for k in kernels)  # all of b's kernels are a's
    mlp_only = [k for k in kernels if k.startswith("m_")]
    shared_with_cnn = n_mlp - len(mlp_only)  # e.g. the bias add / matmul shapes they share
    assert len(kernels) == n_cnn + n_mlp - shared_with_cnn
    assert len(mlp_only) >= 1


def test_merge_tasks_rejects_a_name_clash():
    mod = MergeTasks({"a": _legalized("mlp", 0)})(tvm.IRModule())
    with pytest.raises(ValueError, match="task 'a': function 'task_a' already in the module"):
        MergeTasks({"a": _legalized("mlp", 1)})(mod)


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
