"""QuantizeInt8 and quantize_int8: convs and dense layers become int8 kernels with int32 sums
and one requantization each (bias and activation folded in); the integer requantization is
round(sum * real multiplier) to 31 bits; ops it does not know run in float32; weights round trip
within half a step; missing, constant or misshaped calibration data is refused by name."""

import numpy as np
import pytest
import torch
import tvm
from int8_tasks import padded_residual_softmax, samples
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm_weightvirt.passes.quantize_int8 import (
    ActivationRanges,
    QParams,
    QuantizeError,
    QuantizeInt8,
    _Requantization,
    _requantize,
)
from tvm_weightvirt.runtime.standalone import StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.frontend.int8 import quantize_int8


def _calls(mod: tvm.IRModule) -> list[tuple[str, list[str]]]:
    """(op or called function, argument dtypes) of each call in main, in order."""
    calls = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                name = v.op.name if isinstance(v.op, tvm.ir.Op) else ""
                if name == "relax.call_tir":
                    name, args = v.args[0].name_hint, list(v.args[1].fields)
                else:
                    args = list(v.args)
                dtypes = [str(a.ty.dtype) for a in args if isinstance(a.ty, relax.TensorType)]
                calls.append((name, dtypes))
    return calls


def _batches(task: wv.Task, samples: np.ndarray) -> list[np.ndarray]:
    b = task.input_types[0][0][0]
    return [samples[i : i + b] for i in range(0, len(samples) // b * b, b)]


@pytest.fixture(scope="module")
def cnn2d():
    model, x = examples.torch_model("cnn2d", 0)
    return wv.Task.from_torch(model, (x,), name="cnn")


def test_a_conv_its_bias_and_leaky_relu_become_one_int8_conv_and_its_requantization(cnn2d):
    quantized = quantize_int8(cnn2d, samples(cnn2d, 64))
    assert quantized.weights == {}  # int8 weights are constants of the graph
    calls = _calls(relax.transform.LegalizeOps()(quantized.mod))
    linear = [(n, d) for n, d in calls if n.startswith(("conv2d", "matmul"))]
    assert [d for _, d in linear] == [["int8", "int8"]] * 3  # two convs and the dense layer
    assert sum(n.startswith("requantize") for n, _ in calls) == 3
    # no float work but the input's quantization and the output's dequantization
    assert not any(n.startswith(("add", "leaky", "multiply")) for n, _ in calls[5:-2])


@I.ir_module
class NoConstantWeights:
    @R.function
    def main(x: R.Tensor((1, 8), "float32"), w: R.Tensor((8, 4), "float32")):
        R.func_attr({"num_input": 2})
        with R.dataflow():
            y = R.matmul(x, w)
            p = R.nn.softmax(y, axis=1)
            R.output(p)
        return p


def test_a_graph_without_constant_weights_is_left_as_it_is():
    """A matmul of two inputs (its weight is not a constant) and a softmax stay float32."""
    ranges = ActivationRanges([(-1.0, 1.0), (-1.0, 1.0)], [(-3.0, 3.0), (0.0, 1.0)])
    tvm.ir.assert_structural_equal(QuantizeInt8(ranges)(NoConstantWeights), NoConstantWeights)


def test_the_requantization_is_the_rounded_product_with_the_real_multiplier():
    real = np.array([3.1e-4, 7.7e-3, 0.21, 0.9])
    rq = _Requantization.of(real, zero_point=-7, alpha=0.2, what="t")
    assert np.all(np.abs(rq.multiplier / 2.0**rq.shift - real) <= 2.0**-rq.shift)
    rng = np.random.default_rng(0)
    sums = rng.integers(-(2**20), 2**20, size=(4, 256)).astype(np.int32)
    bias = rng.integers(-1000, 1000, size=4)
    offset = bias * rq.multiplier + (1 << (rq.shift - 1))
    acc = tvm.te.placeholder((4, 256), "int32")
    m0 = tvm.te.placeholder((4,), "int32")
    off = tvm.te.placeholder((4,), "int64")
    out = _requantize(acc, m0, off, 0, rq)
    f = tvm.compile(tvm.te.create_prim_func([acc, m0, off, out]), "llvm")
    got = tvm.runtime.tensor(np.zeros((4, 256), np.int8))
    args = (sums, rq.multiplier.astype(np.int32), offset.astype(np.int64))
    f(*[tvm.runtime.tensor(a) for a in args], got)
    # exact integers: floor((s + b) * m0 / 2^n + 1/2), then the slope, zero point and clip
    r = ((sums.astype(object) + bias[:, None]) * rq.multiplier[:, None].astype(object)) >> (
        rq.shift - 1
    )
    r = (r + 1) >> 1
    neg = (np.maximum(r, -(2**16)) * rq.alpha_multiplier + (1 << (rq.alpha_shift - 1))) >> (
        rq.alpha_shift
    )
    expected = np.clip(np.where(r < 0, neg, r) - 7, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_int8_outputs_follow_the_float_model_within_a_few_steps(cnn2d):
    calibration = samples(cnn2d, 64)
    float_model = StandaloneModel(cnn2d)
    int8_model = StandaloneModel(quantize_int8(cnn2d, calibration))
    for batch in _batches(cnn2d, calibration)[:8]:
        want, got = float_model.run(batch)[0], int8_model.run(batch)[0]
        assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_ops_it_does_not_know_run_in_float_and_a_padding_takes_the_zero_point():
    task = padded_residual_softmax()
    calibration = samples(task, 64)
    quantized = quantize_int8(task, calibration)
    calls = _calls(quantized.mod)
    pads = [d for n, d in calls if n == "relax.nn.pad"]
    assert pads == [["int8"]]
    assert ("relax.nn.softmax", ["float32"]) in calls
    assert ("relax.add", ["float32", "float32"]) in calls  # the residual
    float_model, int8_model = StandaloneModel(task), StandaloneModel(quantized)
    for x in calibration[:8]:
        want, got = float_model.run(x[None])[0], int8_model.run(x[None])[0]
        assert np.abs(got - want).max() <= 0.05


def test_weights_round_trip_within_half_a_step_per_output_channel():
    w = np.random.default_rng(1).normal(size=(8, 3, 3, 3)) * np.arange(1, 9)[:, None, None, None]
    scale = np.abs(w.reshape(8, -1)).max(1) / 127
    codes = np.clip(np.round(w / scale[:, None, None, None]), -127, 127)
    assert np.all(np.abs(codes * scale[:, None, None, None] - w) <= scale[:, None, None, None] / 2)
    q = QParams.of_range(-1.5, 4.0, "t")
    assert q.zero_point == round(-128 + 1.5 / q.scale)
    assert float(np.float32(f"{q.scale:.6e}")) == q.scale  # prints back exactly in C


def test_missing_constant_or_misshaped_calibration_data_is_refused_by_name(cnn2d):
    with pytest.raises(QuantizeError, match="task 'cnn': no calibration samples"):
        quantize_int8(cnn2d, np.zeros((0, 1, 14, 14), np.float32))
    with pytest.raises(QuantizeError, match="task 'cnn': the 16 calibration samples are all eq"):
        quantize_int8(cnn2d, np.ones((16, 1, 14, 14), np.float32))
    with pytest.raises(QuantizeError, match=r"are \(1, 12, 12\) each, .* takes \(1, 14, 14\)"):
        quantize_int8(cnn2d, np.ones((16, 1, 12, 12), np.float32))
    dead = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.nn.init.zeros_(dead[0].weight)
    torch.nn.init.constant_(dead[0].bias, -1.0)  # the ReLU's output is 0 for every input
    task = wv.Task.from_torch(dead.eval(), (torch.randn(1, 6),), "dead")
    with pytest.raises(
        QuantizeError, match="task 'dead': the matmul output 'lv[0-9]+' is 0 on every"
    ):
        quantize_int8(task, samples(task, 16))
