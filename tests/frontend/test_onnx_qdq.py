"""A model quantized in QDQ format comes in as float32 with its quantization kept: its int8
task, made without calibration data, has the model's own weight codes and computes what ONNX's
reference evaluator computes for the QDQ graph; QDQ patterns it cannot take are named."""

import numpy as np
import onnx
import pytest
import tvm
from int8_tasks import qdq_model
from onnx import helper
from onnx.reference import ReferenceEvaluator
from tvm import relax
from tvm_weightvirt.runtime.standalone import StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.frontend.onnx_qdq import fold_qdq


def _int8_constants(mod: tvm.IRModule) -> list[np.ndarray]:
    found = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call):
                for a in b.value.args:
                    if isinstance(a, tvm.ir.GenericConst) and str(a.value.dtype) == "int8":
                        found.append(a.value.numpy())
    return found


def test_a_qdq_model_keeps_its_weight_codes_and_computes_what_its_graph_says():
    model, conv_codes = qdq_model()
    task = wv.Task.from_onnx(model, name="qdq")
    assert not any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in fold_qdq(model).graph.node
    )
    int8 = wv.quantize_int8(task, None)  # the graph's clips are the ranges: no calibration
    conv = next(c for c in _int8_constants(int8.mod) if c.ndim == 4)
    np.testing.assert_array_equal(conv, conv_codes)
    reference, ours = ReferenceEvaluator(model), StandaloneModel(int8)
    rng = np.random.default_rng(1)
    for _ in range(8):
        x = rng.normal(size=(1, 1, 8, 8)).astype(np.float32)
        want, got = reference.run(None, {"x": x})[0], ours.run(x)[0]
        assert np.abs(got - want).max() <= 0.1 + 1e-6  # at most one step of the output's scale


def test_qdq_patterns_it_cannot_take_are_named():
    model, _ = qdq_model()
    read_raw = onnx.ModelProto()
    read_raw.CopyFrom(model)
    read_raw.graph.node.append(helper.make_node("Identity", ["x_q"], ["raw"]))
    with pytest.raises(wv.IntakeError, match="task 'q': QuantizeLinear 'x_q': its output is read by .*'Identity'"):
        wv.Task.from_onnx(read_raw, name="q")
    per_axis = onnx.ModelProto()
    per_axis.CopyFrom(model)
    scale = next(i for i in per_axis.graph.initializer if i.name == "s_x")
    scale.CopyFrom(onnx.numpy_helper.from_array(np.full(2, 0.02, np.float32), "s_x"))
    with pytest.raises(wv.IntakeError, match="per-axis activation scales are not taken in"):
        wv.Task.from_onnx(per_axis, name="q")


def test_a_float_model_without_samples_has_no_ranges():
    model, x = examples.torch_model("mlp", 0)
    task = wv.Task.from_torch(model, (x,), name="mlp")
    with pytest.raises(wv.QuantizeError, match="task 'mlp': .* has no range: give calibration"):
        wv.quantize_int8(task, None)
