"""ConvWeightsOutputChannelsLast: each conv weight permuted to output channels last; grouped
convolutions keep their layout."""

import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes import (
    ConvWeightsOutputChannelsLast,
)


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
