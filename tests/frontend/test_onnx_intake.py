"""ONNX intake of what exporters write for common layers: shape arithmetic (chunk, channel
shuffle, causal padding) folds to constants before TVM sees it, Clip and Pad become Relax ops,
and LSTM and GRU (which TVM lacks) unroll, so the graph has a torch twin and computes what
torch, or ONNX's reference evaluator, does."""

import io
import re

import numpy as np
import onnx
import onnx.reference
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from tvm_weightvirt.runtime import StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.frontend.onnx_shape_folding import fold_shape_computations
from tvm_weightvirt.frontend.twin import TorchTwin, _op_names


class _ShapeArithmetic(torch.nn.Module):
    """chunk (Shape -> Gather -> Div -> Slice), a channel shuffle (a reshape by computed
    sizes), a causal pad (ConstantOfShape -> Concat -> ... -> Pad) and a ReLU6 (Clip)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 4, 3)

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        x = torch.cat([b, a * 2], 1)
        n, c, w = x.shape
        x = x.reshape(n, 2, c // 2, w).transpose(1, 2).reshape(n, c, w)
        return F.relu6(self.conv(F.pad(x, (2, 0))))


def _exported(model: torch.nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def test_shape_arithmetic_folds_and_the_graph_computes_what_torch_does():
    torch.manual_seed(0)
    model, x = _ShapeArithmetic(), torch.randn(1, 4, 8)
    exported = _exported(model, x)
    assert {"Shape", "ConstantOfShape", "Clip"} <= {n.op_type for n in exported.graph.node}
    folded = fold_shape_computations(exported, {})
    assert not {"Shape", "ConstantOfShape"} & {n.op_type for n in folded.graph.node}
    assert [i.name for i in folded.graph.initializer] == [
        i.name for i in exported.graph.initializer
    ]

    task = wv.Task.from_onnx(exported, name="shapes")
    assert sorted(task.weights) == ["conv.bias", "conv.weight"]
    ops = _op_names(task.mod["main"])
    assert "relax.call_tir" not in ops and {"relax.nn.pad", "relax.minimum"} <= ops
    with torch.no_grad():
        expected = model(x).numpy()
        twin = TorchTwin(task)(x).numpy()
    np.testing.assert_allclose(StandaloneModel(task).run(x.numpy())[0], expected, atol=1e-6)
    np.testing.assert_allclose(twin, expected, atol=1e-6)


def test_a_shape_read_after_a_computed_reshape_folds_too():
    """`Shape` of a Reshape's output is static only once the Reshape's shape is a constant
    (PaddleOCR's recogniser): folding runs again with the shapes it made static."""

    def shape_node(name, of, start, end):
        return helper.make_node("Shape", [of], [name], start=start, end=end)

    nodes = [
        shape_node("batch", "x", 0, 1),
        helper.make_node("Concat", ["batch", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        shape_node("flat_batch", "flat", 0, 1),
        helper.make_node("Concat", ["flat_batch", "four_six"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["flat", "out_shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "reshapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("four_six", TensorProto.INT64, [2], [4, 6]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded = fold_shape_computations(model, {})
    assert "Shape" not in {n.op_type for n in folded.graph.node}
    x = np.arange(24, dtype=np.float32).reshape(1, 6, 4)
    out = StandaloneModel(wv.Task.from_onnx(model, name="reshapes")).run(x)[0]
    np.testing.assert_array_equal(out, x.reshape(1, 4, 6))


@pytest.mark.parametrize("pads", [[0, 0, 1, 0, 0, -1], [0, 0, 1, 0, 0, 2]])
def test_pad_by_negative_widths_crops_as_onnx_says(pads):
    """Negative widths (a crop) stay TVM's conversion; non-negative ones are `nn.pad`."""
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="constant")],
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5 + pads[2] + pads[5]])],
        [helper.make_tensor("pads", TensorProto.INT64, [6], pads)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(10, dtype=np.float32).reshape(1, 2, 5)
    before, after = pads[2], pads[5]
    expected = np.pad(x[..., : 5 + min(after, 0)], [(0, 0), (0, 0), (before, max(after, 0))])
    task = wv.Task.from_onnx(model, name="pad")
    np.testing.assert_array_equal(StandaloneModel(task).run(x)[0], expected)


def test_sum_is_adds_that_fuse_into_the_conv_before_them():
    """ONNX's Sum (a ResNet's residual) imports as adds, left to right, not as TVM's stack and
    reduce: no kernel of its own, and the same sums (0 + a + b + c = (a + b) + c)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
            helper.make_node("Sum", ["y", "x", "r"], ["s"]),
        ],
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 6, 6])],
        [
            onnx.numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype("float32"), "w"),
            onnx.numpy_helper.from_array(rng.normal(size=(1, 4, 6, 6)).astype("float32"), "r"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    task = wv.Task.from_onnx(model, name="residual")
    ops = _op_names(task.mod["main"])
    assert "relax.add" in ops and not {"relax.sum", "relax.stack"} & ops
    x = rng.normal(size=(1, 4, 6, 6)).astype("float32")
    (expected,) = onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(StandaloneModel(task).run(x)[0], expected, rtol=1e-5, atol=1e-5)


def _recurrent_model(op: str, hidden: int, direction: str, **attrs) -> onnx.ModelProto:
    """One `op` (LSTM or GRU) over x [seq 5, batch 2, input 3], with biases and initial
    states, outputs Y and the last state(s)."""
    rng = np.random.default_rng(0)
    gates, states = {"LSTM": (4, ["h0", "c0"]), "GRU": (3, ["h0"])}[op]
    dirs = 2 if direction == "bidirectional" else 1
    shapes = {
        "W": [dirs, gates * hidden, 3],
        "R": [dirs, gates * hidden, hidden],
        "B": [dirs, 2 * gates * hidden],
        **{s: [dirs, 2, hidden] for s in states},
    }
    weights = [
        helper.make_tensor(n, TensorProto.FLOAT, d, rng.normal(0, 0.5, d).ravel().tolist())
        for n, d in shapes.items()
    ]
    outputs = ["Y", *(f"{s[0].upper()}_last" for s in states)]
    node = helper.make_node(
        op,
        ["x", "W", "R", "B", "", *states],
        outputs,
        hidden_size=hidden,
        direction=direction,
        **attrs,
    )
    out_shapes = [[5, dirs, 2, hidden]] + [[dirs, 2, hidden]] * len(states)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, 3])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
            for n, s in zip(outputs, out_shapes)
        ],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "op, direction, attrs",
    [
        ("LSTM", "forward", {}),
        ("LSTM", "bidirectional", {}),
        ("GRU", "reverse", {"linear_before_reset": 1}),
        ("GRU", "bidirectional", {"linear_before_reset": 0}),
    ],
)
def test_lstm_and_gru_compute_what_onnx_says(op, direction, attrs):
    model = _recurrent_model(op, 4, direction, **attrs)
    x = np.random.default_rng(1).normal(size=(5, 2, 3)).astype(np.float32)
    expected = onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})
    task = wv.Task.from_onnx(model, name="rnn")
    built = StandaloneModel(task).run(x)
    with torch.no_grad():
        twin = TorchTwin(task)(torch.from_numpy(x))
    for want, got, from_twin in zip(expected, built, twin, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(from_twin.numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "attrs, named",
    [
        ({"clip": 2.0}, "clip=2.0"),
        ({"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations ['Sigmoid', 'Relu', 'Tanh']"),
        ({"input_forget": 1}, "input_forget=1"),
    ],
)
def test_an_lstm_variant_the_converter_does_not_take_is_named(attrs, named):
    model = _recurrent_model("LSTM", 4, "forward", **attrs)
    with pytest.raises(wv.IntakeError, match=rf"task 'rnn': .*LSTM with {re.escape(named)}"):
        wv.Task.from_onnx(model, name="rnn")
