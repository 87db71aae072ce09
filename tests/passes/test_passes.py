"""The passes' IR rules, one Before/Expected TVMScript test per rule and one "left unchanged"
test per pass: VirtualizeWeights' gather, MergeTasks' renaming and kernel dedup,
LiftWeightConstants' choice of weights, LiftWeightTransforms' split, NormalizeTakeIndices'
non-negative indices,
ConvWeightsOutputChannelsLast's and WeightsInKernelLayout's weight layouts, AddPageGather's
(plain and coded) and ExclusivePageLoader's gather kernels, ReadWeightsThroughPages' paged
weight reads."""

import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T
from tvm_weightvirt.passes import (
    AddPageGather,
    ConvWeightsOutputChannelsLast,
    ExclusivePageLoader,
    LiftWeightConstants,
    LiftWeightTransforms,
    MergeTasks,
    NormalizeTakeIndices,
    ReadWeightsThroughPages,
    VirtualizeWeights,
    WeightsInKernelLayout,
)
from tvm_weightvirt.passes.normalize_take_indices import TakeIndexError
from tvm_weightvirt.passes.read_weights_through_pages import reads_per_element, row_split
from tvm_weightvirt.passes.weights_in_kernel_layout import kernel_layout_axes, permute_weights

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.coded_pages import CodeFormat


def _without(mod: tvm.IRModule, name: str) -> tvm.IRModule:
    """`mod` less its function `name` (which must be there)."""
    assert name in [gv.name_hint for gv in mod.get_global_vars()]
    kept = {gv: f for gv, f in mod.functions_items() if gv.name_hint != name}
    return tvm.IRModule(kept, attrs=mod.attrs)


# **** VirtualizeWeights ****


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


# **** MergeTasks ****


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
    tvm.ir.assert_structural_equal(_without(after, "task_c"), MergeExpected)
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


# **** LiftWeightConstants ****

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


# **** ConvWeightsOutputChannelsLast ****


@I.ir_module
class ConvLayoutBefore:
    @R.function
    def main(
        x: R.Tensor((1, 2, 5, 5), "float32"),
        w: R.Tensor((4, 2, 3, 3), "float32"),
        v: R.Tensor((4, 2, 3), "float32"),
        s: R.Tensor((1, 2, 7), "float32"),
    ) -> R.Tuple(R.Tensor((1, 4, 3, 3), "float32"), R.Tensor((1, 4, 5), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w)
            z = R.nn.conv1d(s, v)
            out = (y, z)
            R.output(out)
        return out


@I.ir_module
class ConvLayoutExpected:
    @R.function
    def main(
        x: R.Tensor((1, 2, 5, 5), "float32"),
        w: R.Tensor((4, 2, 3, 3), "float32"),
        v: R.Tensor((4, 2, 3), "float32"),
        s: R.Tensor((1, 2, 7), "float32"),
    ) -> R.Tuple(R.Tensor((1, 4, 3, 3), "float32"), R.Tensor((1, 4, 5), "float32")):
        with R.dataflow():
            wt = R.permute_dims(w, axes=[2, 3, 1, 0])
            y = R.nn.conv2d(x, wt, kernel_layout="HWIO")
            vt = R.permute_dims(v, axes=[2, 1, 0])
            z = R.nn.conv1d(s, vt, kernel_layout="WIO")
            out = (y, z)
            R.output(out)
        return out


def test_conv_weights_output_channels_last_permutes_each_conv_weight():
    """conv2d OIHW -> HWIO and conv1d OIW -> WIO, through a permute of the weight."""
    after = ConvWeightsOutputChannelsLast()(ConvLayoutBefore)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, ConvLayoutExpected)


def test_grouped_convolutions_keep_their_layout():
    """Only one-group NC.../OI... convolutions are rewritten (depthwise ones are not)."""
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    w = relax.Var("w", relax.TensorType((4, 1, 3, 3), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        out = bb.emit(relax.op.nn.conv2d(x, w, groups=4))
        bb.emit_func_output(out)
    mod = bb.get()
    tvm.ir.assert_structural_equal(ConvWeightsOutputChannelsLast()(mod), mod)


# **** WeightsInKernelLayout ****


@I.ir_module
class KernelLayoutBefore:
    @R.function
    def main(
        x: R.Tensor((1, 2, 5, 5), "float32"),
        c: R.Tensor((4, 2, 3, 3), "float32"),
        w: R.Tensor((3, 36), "float32"),
        u: R.Tensor((3, 3), "float32"),
        b: R.Tensor((3,), "float32"),
    ) -> R.Tuple(R.Tensor((1, 3), "float32"), R.Tensor((3, 3), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.conv2d(x, c)
            f = R.reshape(y, [1, 36])
            wt = R.permute_dims(w)
            z = R.matmul(f, wt)
            ut = R.permute_dims(u)
            v = R.matmul(z, ut)
            o = R.add(v, b)
            out = (o, u)
            R.output(out)
        return out


@I.ir_module
class KernelLayoutExpected:
    @R.function
    def main(
        x: R.Tensor((1, 2, 5, 5), "float32"),
        c: R.Tensor((3, 3, 2, 4), "float32"),
        w: R.Tensor((36, 3), "float32"),
        u: R.Tensor((3, 3), "float32"),
        b: R.Tensor((3,), "float32"),
    ) -> R.Tuple(R.Tensor((1, 3), "float32"), R.Tensor((3, 3), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.conv2d(x, c, kernel_layout="HWIO")
            f = R.reshape(y, [1, 36])
            z = R.matmul(f, w)
            ut = R.permute_dims(u)
            v = R.matmul(z, ut)
            o = R.add(v, b)
            out = (o, u)
            R.output(out)
        return out


def test_weights_in_kernel_layout_takes_each_weight_as_its_kernel_reads_it():
    """The conv weight output channels last, the dense weight transposed; `u`, which the
    function also returns as it is, and the bias keep their layout."""
    after = WeightsInKernelLayout()(KernelLayoutBefore)
    relax.analysis.well_formed(after)
    tvm.ir.assert_structural_equal(after, KernelLayoutExpected)
    func = ConvWeightsOutputChannelsLast()(KernelLayoutBefore)["main"]
    assert kernel_layout_axes(func) == {0: [2, 3, 1, 0], 1: [1, 0]}


def test_weights_in_kernel_layout_leaves_weights_read_as_stored_unchanged():
    """A module whose weights no permute reads (here: the bias and `u` of the Expected
    module, which already takes its weights in kernel layout) is left as it is."""
    tvm.ir.assert_structural_equal(
        WeightsInKernelLayout()(KernelLayoutExpected), KernelLayoutExpected
    )


def test_weights_in_kernel_layout_changes_no_output_bit():
    """Compiled before and after, with the weights permuted by `permute_weights`."""
    rng = np.random.default_rng(0)
    params = KernelLayoutBefore["main"].params
    x, *weights = [rng.normal(size=[int(d) for d in p.ty.shape]).astype("float32") for p in params]
    named = dict(zip("cwub", weights))
    axes = kernel_layout_axes(ConvWeightsOutputChannelsLast()(KernelLayoutBefore)["main"])
    outputs = []
    for mod, given in [
        (KernelLayoutBefore, named),
        (WeightsInKernelLayout()(KernelLayoutBefore), permute_weights(named, axes)),
    ]:
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(a) for a in [x, *given.values()]])
        outputs.append([o.numpy() for o in out])
    for before, after in zip(*outputs):
        np.testing.assert_array_equal(before, after)


# **** LiftWeightTransforms ****


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


def test_lift_weight_transforms_adds_no_function_when_no_op_depends_on_weights_alone():
    """A task whose weights are already as its kernels read them (a task in kernel layout)
    gets no transform function: its switch has nothing to run. (The contrast: `u` of
    KernelLayoutExpected is still permuted, so that module gets one.)"""
    mod = WeightsInKernelLayout()(_matmul_only())
    lifted = LiftWeightTransforms()(mod)
    assert [gv.name_hint for gv in lifted.get_global_vars()] == ["main"]
    tvm.ir.assert_structural_equal(lifted, mod)
    contrast = LiftWeightTransforms()(KernelLayoutExpected)
    assert "wv_transform_main" in [gv.name_hint for gv in contrast.get_global_vars()]


def _matmul_only() -> tvm.IRModule:
    @I.ir_module
    class MatmulOnly:
        @R.function
        def main(x: R.Tensor((1, 4), "float32"), w: R.Tensor((3, 4), "float32")) -> R.Tensor(
            (1, 3), "float32"
        ):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                wt = R.permute_dims(w)
                y = R.matmul(x, wt)
                R.output(y)
            return y

    return MatmulOnly


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


# **** AddPageGather and ExclusivePageLoader ****
# te.create_prim_func gives the dynamic page axis an int32 0 as its start (its extent is the
# int64 page count): the Expected kernels spell that out as (T.int32(0), n_pages).


@I.ir_module
class GatherBefore:
    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


@I.ir_module
class GatherExpected:
    @T.prim_func(s_tir=True)
    def wv_gather_pages(pool_h: T.handle, page_table_h: T.handle, weight_pages_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        n_pool_pages, n_pages = T.int64(), T.int64()
        pool = T.match_buffer(pool_h, (n_pool_pages, 100), "float32")
        page_table = T.match_buffer(page_table_h, (n_pages,), "uint16")
        weight_pages = T.match_buffer(weight_pages_h, (n_pages, 100), "float32")
        for i, j in T.grid(n_pages, 100):
            with T.sblock("weight_pages"):
                vi = T.axis.spatial((T.int32(0), n_pages), i)
                vj = T.axis.spatial(100, j)
                weight_pages[vi, vj] = pool[T.Cast("int64", page_table[vi]), vj]

    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


@I.ir_module
class CodedGatherExpected:
    @T.prim_func(s_tir=True)
    def wv_gather_coded_pages(
        codes_h: T.handle, bases_h: T.handle, page_table_h: T.handle, weight_pages_h: T.handle
    ):
        T.func_attr({"tirx.noalias": True})
        n_pool_pages, n_pages = T.int64(), T.int64()
        # 6 codes of 5 bits, 6 to a 32-bit word: rows of 1 word
        codes = T.match_buffer(codes_h, (n_pool_pages, 1), "uint32")
        bases = T.match_buffer(bases_h, (n_pool_pages, 3, 3), "float16")
        page_table = T.match_buffer(page_table_h, (n_pages,), "uint16")
        weight_pages = T.match_buffer(weight_pages_h, (n_pages, 6), "float32")
        for i, j, k in T.grid(n_pages, 6, 3):
            with T.sblock("weight_pages"):
                vi = T.axis.spatial((T.int32(0), n_pages), i)
                vj, vk = T.axis.remap("SR", [j, k])
                # page t, code q = 3 (vj // 3) + vk: bits 5 (q % 6) .. of word q // 6
                t = T.meta_var(T.Cast("int64", page_table[vi]))
                q = T.meta_var(vj // 3 * 3 + vk)
                word = T.meta_var(codes[t, q // 6])
                symbol = T.meta_var(
                    T.Cast("int32", word >> T.Cast("uint32", q % 6 * 5) & T.uint32(31))
                )
                # symbol 0: zero; else +-2^(-8 + (symbol - 1) // 2), negative for odd symbol - 1;
                # the float16 basis widened to float32
                magnitude = T.meta_var(T.ldexp(T.float32(1), (symbol - 1) // 2 - 8))
                c = T.meta_var(
                    T.if_then_else(
                        symbol == 0,
                        T.float32(0),
                        T.if_then_else((symbol + 1) % 2 == 1, magnitude * T.float32(-1), magnitude),
                    )
                )
                with T.init():
                    weight_pages[vi, vj] = T.float32(0)
                weight_pages[vi, vj] = weight_pages[vi, vj] + c * T.Cast(
                    "float32", bases[t, vk, vj % 3]
                )

    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


@I.ir_module
class ExclusiveGatherExpected:
    @T.prim_func(s_tir=True)
    def wv_gather_pages_exclusive(
        pool_h: T.handle, exclusive_h: T.handle, page_table_h: T.handle, weight_pages_h: T.handle
    ):
        T.func_attr({"tirx.noalias": True})
        n_pool_pages, n_exclusive_pages, n_pages = T.int64(), T.int64(), T.int64()
        pool = T.match_buffer(pool_h, (n_pool_pages, 100), "float32")
        exclusive = T.match_buffer(exclusive_h, (n_exclusive_pages, 100), "float32")
        page_table = T.match_buffer(page_table_h, (n_pages,), "uint16")
        weight_pages = T.match_buffer(weight_pages_h, (n_pages, 100), "float32")
        for i, j in T.grid(n_pages, 100):
            with T.sblock("weight_pages"):
                vi = T.axis.spatial((T.int32(0), n_pages), i)
                vj = T.axis.spatial(100, j)
                v = T.meta_var(T.Cast("int64", page_table[vi]))
                weight_pages[vi, vj] = T.if_then_else(
                    v < n_pool_pages, pool[v, vj], exclusive[v - n_pool_pages, vj]
                )

    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


def test_add_page_gather_adds_the_gather_kernel():
    """Adds one PrimFunc `wv_gather_pages(pool, page_table, weight_pages)` with
    `weight_pages[i, j] = pool[page_table[i], j]`, for any pool size and table length."""
    after = AddPageGather(100)(GatherBefore)
    tvm.ir.assert_structural_equal(after, GatherExpected)


def test_add_page_gather_coded_adds_the_decoding_gather_kernel():
    """With `coded`, adds `wv_gather_coded_pages(codes, bases, page_table, weight_pages)`:
    each gathered page is C @ B, C its power-of-two codes decoded as a (P/3) x 3 matrix and B
    its 3x3 bases."""
    after = AddPageGather(6, coded=CodeFormat(width=5, min_exponent=-8))(GatherBefore)
    tvm.ir.assert_structural_equal(after, CodedGatherExpected)


def test_add_page_gather_coded_refuses_pages_that_are_not_rows_of_3():
    """A coded page is (P/3) x 3 coefficients: P must be a multiple of 3."""
    with pytest.raises(ValueError, match="multiple of 3, got 100"):
        AddPageGather(100, coded=CodeFormat(width=5, min_exponent=-8))


@pytest.mark.parametrize("coded", [False, True])
def test_add_page_gather_leaves_relax_functions_unchanged(coded):
    """The pass only adds its kernel: every function already in the module is kept as is."""
    after = AddPageGather(6, coded=CodeFormat(5, -8) if coded else None)(GatherBefore)
    name = "wv_gather_coded_pages" if coded else "wv_gather_pages"
    tvm.ir.assert_structural_equal(_without(after, name), GatherBefore)


def test_exclusive_page_loader_adds_the_exclusive_gather_kernel():
    """Adds `wv_gather_pages_exclusive(pool, exclusive, page_table, weight_pages)`: a table
    entry v < S (the pool's page count) reads pool page v, an entry v >= S reads exclusive
    page v - S."""
    after = ExclusivePageLoader(100)(GatherBefore)
    tvm.ir.assert_structural_equal(after, ExclusiveGatherExpected)


def test_exclusive_page_loader_leaves_relax_functions_unchanged():
    """The pass only adds its kernel, beside any gather already there: every function already
    in the module is kept as is."""
    with_gather = AddPageGather(100)(GatherBefore)
    after = ExclusivePageLoader(100)(with_gather)
    tvm.ir.assert_structural_equal(_without(after, "wv_gather_pages_exclusive"), with_gather)


# **** ReadWeightsThroughPages ****


@I.ir_module
class PagedBefore:
    @T.prim_func(s_tir=True)
    def dense(
        x: T.Buffer((1, 144), "float32"),
        w: T.Buffer((10, 144), "float32"),
        y: T.Buffer((1, 10), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, k in T.grid(10, 144):
            with T.sblock("y"):
                vi, vk = T.axis.remap("SR", [i, k])
                with T.init():
                    y[0, vi] = T.float32(0)
                y[0, vi] = y[0, vi] + x[0, vk] * w[vi, vk]

    @T.prim_func(s_tir=True)
    def scale(
        x: T.Buffer((2, 5), "float32"),
        s: T.Buffer((2, 5), "float32"),
        y: T.Buffer((2, 5), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(2, 5):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] * s[vi, vj]


@I.ir_module
class PagedExpected:
    @T.prim_func(s_tir=True)
    def dense_paged_1(
        x: T.Buffer((1, 144), "float32"),
        w_pages: T.Buffer((2880,), "float32"),
        w_table: T.Buffer((5,), "uint16"),
        y: T.Buffer((1, 10), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, k in T.grid(10, 144):
            with T.sblock("y"):
                vi, vk = T.axis.remap("SR", [i, k])
                T.reads(x[0, vk], w_pages[0:2880], w_table[0:5])
                T.writes(y[0, vi])
                with T.init():
                    y[0, vi] = T.float32(0)
                # rows of 144 divide P = 288: row vi is on page vi // 2, at (vi % 2) * 144
                page = T.meta_var(
                    T.Cast("int32", w_table[T.Cast("int32", T.Cast("int64", vi) // T.int64(2))])
                )
                offset = T.meta_var(
                    T.Cast(
                        "int32",
                        T.Cast("int64", vi) % T.int64(2) * T.int64(144) + T.Cast("int64", vk),
                    )
                )
                y[0, vi] = y[0, vi] + x[0, vk] * w_pages[page * 288 + offset]

    @T.prim_func(s_tir=True)
    def scale(
        x: T.Buffer((2, 5), "float32"),
        s: T.Buffer((2, 5), "float32"),
        y: T.Buffer((2, 5), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(2, 5):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] * s[vi, vj]

    @T.prim_func(s_tir=True)
    def scale_paged_1(
        x: T.Buffer((2, 5), "float32"),
        s_pages: T.Buffer((2880,), "float32"),
        s_table: T.Buffer((1,), "uint16"),
        y: T.Buffer((2, 5), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(2, 5):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.reads(x[vi, vj], s_pages[0:2880], s_table[0:1])
                T.writes(y[vi, vj])
                # no trailing block of (2, 5) divides 288: the page is found per element
                flat = T.meta_var(T.Cast("int64", vi) * T.int64(5) + T.Cast("int64", vj))
                page = T.meta_var(T.Cast("int32", s_table[T.Cast("int32", flat // T.int64(288))]))
                offset = T.meta_var(T.Cast("int32", flat % T.int64(288)))
                y[vi, vj] = x[vi, vj] * s_pages[page * 288 + offset]


def test_read_weights_through_pages_reads_each_row_from_its_page():
    """A weight parameter becomes (page storage, its page table); `W[i, k]` becomes
    `pages[table[page] * P + offset]`, the page found from the leading axes only. A kernel
    also called without weights (`()` among its uses) is kept beside its paged variant."""
    after = ReadWeightsThroughPages(288, 2880, {"dense": [(1,)], "scale": [(1,), ()]})(PagedBefore)
    tvm.ir.assert_structural_equal(after, PagedExpected)


@pytest.mark.parametrize("page_size", [64, 96, 100, 128, 288])
@pytest.mark.parametrize(
    "shape", [(16, 1, 3, 3), (32, 16, 5), (10, 256), (128, 13), (3, 70), (130,), (7,)]
)
def test_paged_reads_find_every_weight_on_its_page_and_no_row_crosses_a_page(shape, page_size):
    """The pass's (page, offset) of every element of a page-aligned weight is (flat // P,
    flat % P), page ids stay within the weight's pages, and a row of the split (the elements
    that share the leading indices) lies on one page, contiguously."""
    split = row_split(shape, page_size)
    row = math.prod(shape[split:])
    rows_per_page = page_size // row
    assert page_size % row == 0
    index = np.indices(shape).reshape(len(shape), -1)
    outer = np.ravel_multi_index(index[:split], shape[:split]) if split else np.zeros(1, int)
    inner = np.ravel_multi_index(index[split:], shape[split:]) if split < len(shape) else 0
    page = outer // rows_per_page
    offset = outer % rows_per_page * row + inner
    flat = np.arange(math.prod(shape))
    np.testing.assert_array_equal(page * page_size + offset, flat)
    assert page.max() < -(-math.prod(shape) // page_size)
    starts = offset.reshape(-1, row)[:, 0] if row > 1 else offset
    assert (starts + row <= page_size).all()


@T.prim_func(s_tir=True)
def _broadcast_scale(
    x: T.Buffer((4, 5), "float32"), s: T.Buffer((5,), "float32"), y: T.Buffer((4, 5), "float32")
):
    T.func_attr({"tirx.noalias": True})
    for i, j in T.grid(4, 5):
        with T.sblock("y"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = x[vi, vj] * s[vj]


def test_reads_per_element_counts_how_often_a_kernel_reads_each_weight_element():
    """A dense layer reads each weight element once; a broadcast (like a convolution's weight
    over output positions) reads each as often as it is broadcast."""
    assert reads_per_element(PagedBefore["dense"], 1) == 1.0
    assert reads_per_element(_broadcast_scale, 1) == 4.0
    assert reads_per_element(_broadcast_scale, 0) == 1.0


# **** NormalizeTakeIndices ****


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
