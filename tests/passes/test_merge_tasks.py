"""MergeTasks' renaming and kernel dedup: each task's functions renamed, identical kernels kept
once, clashing kernels given distinct exported names."""

import pytest
import tvm
from ir_helpers import without
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T
from tvm_weightvirt.passes import (
    MergeTasks,
)

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples


@I.ir_module
class MergeTaskA:
    @T.prim_func
    def add_one(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        for i in range(4):
            y[i] = x[i] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = MergeTaskA
        y = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32"))
        return y


@I.ir_module
class MergeTaskB:
    @T.prim_func
    def add_one(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        for i in range(4):
            y[i] = x[i] + T.float32(1)

    @T.prim_func
    def double(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        for i in range(4):
            y[i] = x[i] * T.float32(2)

    @R.function
    def helper(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = MergeTaskB
        y = R.call_tir(cls.double, (x,), out_ty=R.Tensor((4,), "float32"))
        return y

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = MergeTaskB
        y = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32"))
        z = cls.helper(y)
        return z


@I.ir_module
class MergeExpected:
    @T.prim_func
    def a_add_one(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        for i in range(4):
            y[i] = x[i] + T.float32(1)

    @T.prim_func
    def b_double(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        for i in range(4):
            y[i] = x[i] * T.float32(2)

    @R.function
    def task_a(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = MergeExpected
        y = R.call_tir(cls.a_add_one, (x,), out_ty=R.Tensor((4,), "float32"))
        return y

    @R.function
    def b_helper(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = MergeExpected
        y = R.call_tir(cls.b_double, (x,), out_ty=R.Tensor((4,), "float32"))
        return y

    @R.function
    def task_b(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = MergeExpected
        y = R.call_tir(cls.a_add_one, (x,), out_ty=R.Tensor((4,), "float32"))
        z = cls.b_helper(y)
        return z


def test_merge_tasks_renames_functions_and_reuses_identical_kernels():
    """Each task's `main` becomes `task_<name>` and its other functions `<name>_<function>`;
    a PrimFunc identical (but for its name) to one already merged is not copied, the task
    calls the existing one."""
    after = MergeTasks({"a": MergeTaskA, "b": MergeTaskB})(tvm.IRModule())
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, MergeExpected)


def test_merge_tasks_leaves_the_modules_own_functions_unchanged():
    """The functions already in the module the pass runs on are kept as they are: with no task
    the module is unchanged, and a task whose kernels all exist adds only its `task_<name>`."""
    tvm.ir.assert_structural_equal(MergeTasks({})(MergeExpected), MergeExpected)
    after = MergeTasks({"c": MergeTaskA})(MergeExpected)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(without(after, "task_c"), MergeExpected)
    tvm.ir.assert_structural_equal(
        after["task_c"], MergeExpected["task_a"].with_attr("global_symbol", "task_c")
    )


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
    """A task whose renamed Relax function is already in the module is refused."""
    mod = MergeTasks({"a": _legalized("mlp", 0)})(tvm.IRModule())
    with pytest.raises(ValueError, match="task 'a': function 'task_a' already in the module"):
        MergeTasks({"a": _legalized("mlp", 1)})(mod)


@I.ir_module
class ClashA:
    @T.prim_func
    def b_add_one(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        T.func_attr({"global_symbol": "b_add_one"})
        for i in range(4):
            y[i] = x[i] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = ClashA
        y = R.call_tir(cls.b_add_one, (x,), out_ty=R.Tensor((4,), "float32"))
        return y


@I.ir_module
class ClashAB:
    @T.prim_func
    def add_one(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        T.func_attr({"global_symbol": "add_one"})
        for i in range(4):
            y[i] = x[i] * T.float32(2)

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
        cls = ClashAB
        y = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32"))
        return y


def test_merge_tasks_gives_clashing_kernels_distinct_exported_names():
    """Task "a"'s kernel "b_add_one" and task "a_b"'s different kernel "add_one" both become
    "a_b_add_one": the second gets a fresh name, its exported symbol follows it, and task_a_b
    calls it."""
    merged = MergeTasks({"a": ClashA, "a_b": ClashAB})(tvm.IRModule())
    relax.analysis.well_formed(merged)
    kernels = {
        gv.name_hint: f for gv, f in merged.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    }
    assert len(kernels) == 2 and "a_b_add_one" in kernels
    for name, func in kernels.items():
        assert str(func.attrs["global_symbol"]) == name
    (other,) = set(kernels) - {"a_b_add_one"}
    assert f"call_tir({other}," in merged["task_a_b"].script()
    assert "call_tir(a_b_add_one," in merged["task_a"].script()
