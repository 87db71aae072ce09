"""WeightsInKernelLayout: each weight taken as its kernel reads it; weights read as stored
unchanged; no output bit changes."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import (
    ConvWeightsOutputChannelsLast,
    LiftWeightTransforms,
    WeightsInKernelLayout,
)
from tvm_weightvirt.passes.weights_in_kernel_layout import kernel_layout_axes, permute_weights


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
