"""Small float models for the int8 tests, and calibration samples for them."""

import numpy as np
import torch

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples


class PaddedResidualSoftmax(torch.nn.Module):
    """A padded conv (the pad takes the zero point), a residual add and a softmax (both left in
    float32), a 1-D conv without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.conv1d = torch.nn.Conv1d(3, 4, 3, bias=False)
        self.fc = torch.nn.Linear(4 * 14, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x)) + x
        y = self.conv1d(y.mean(dim=2))
        return torch.softmax(self.fc(torch.flatten(y, 1)), dim=1)


def padded_residual_softmax() -> wv.Task:
    torch.manual_seed(0)
    model = PaddedResidualSoftmax().eval()
    return wv.Task.from_torch(model, (torch.randn(1, 3, 8, 16),), name="padded")


def example_tasks() -> list[wv.Task]:
    """The examples' cnn2d (batch norm folded, LeakyReLU, max pools), cnn1d (ReLU, a mean) and
    mlp, and `padded_residual_softmax`."""
    tasks = []
    for kind in ("cnn2d", "cnn1d", "mlp"):
        model, x = examples.torch_model(kind, 0)
        tasks.append(wv.Task.from_torch(model, (x,), name=kind))
    return [*tasks, padded_residual_softmax()]


def samples(task: wv.Task, n: int, seed: int = 0) -> np.ndarray:
    """`n` normal samples shaped like one of the task's inputs without its batch axis."""
    shape = task.input_types[0][0]
    return np.random.default_rng(seed).normal(size=(n, *shape[1:])).astype(np.float32)


def qdq_model(seed: int = 0):
    """A small model in ONNX Runtime's QDQ format: the input quantized (int8, zero point -3),
    a padded conv of per-channel int8 weights and an int32 bias, ReLU, its output quantized
    (zero point -128), a Gemm of int8 weights, its output quantized. Returns the model and the
    int8 codes of the conv's weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    s_x, s_r, s_o = 0.02, 0.05, 0.1
    s_w = rng.uniform(0.005, 0.02, 4)
    w_q = rng.integers(-127, 128, size=(4, 1, 3, 3)).astype(np.int8)
    w_q[:, 0, 0, 0] = 127  # the largest code of each channel, as a symmetric quantizer writes
    b_q = rng.integers(-500, 500, size=4).astype(np.int32)
    s_w2 = np.full(5, 0.01)
    w2_q = rng.integers(-127, 128, size=(5, 4 * 8 * 8)).astype(np.int8)
    w2_q[:, 0] = 127

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [
        init("s_x", np.float32(s_x)), init("z_x", np.int8(-3)),
        init("s_r", np.float32(s_r)), init("z_r", np.int8(-128)),
        init("s_o", np.float32(s_o)), init("z_o", np.int8(0)),
        init("w_q", w_q), init("s_w", s_w.astype(np.float32)), init("z_w", np.zeros(4, np.int8)),
        init("b_q", b_q), init("s_b", (s_x * s_w).astype(np.float32)),
        init("z_b", np.zeros(4, np.int32)),
        init("w2_q", w2_q), init("s_w2", s_w2.astype(np.float32)),
        init("z_w2", np.zeros(5, np.int8)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s_x", "z_x"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "z_w"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "s_b", "z_b"], ["b"], axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s_r", "z_r"], ["r_q"]),
        helper.make_node("DequantizeLinear", ["r_q", "s_r", "z_r"], ["r_dq"]),
        helper.make_node("Flatten", ["r_dq"], ["f"]),
        helper.make_node("DequantizeLinear", ["w2_q", "s_w2", "z_w2"], ["w2"], axis=0),
        helper.make_node("Gemm", ["f", "w2"], ["o"], transB=1),
        helper.make_node("QuantizeLinear", ["o", "s_o", "z_o"], ["o_q"]),
        helper.make_node("DequantizeLinear", ["o_q", "s_o", "z_o"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    return model, w_q
