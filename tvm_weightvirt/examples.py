"""Small example models (seeded random weights) for the demo, tutorials and tests: torch 2-D CNN,
1-D CNN and MLP; ONNX graphs with residual adds, channel concatenation and in-graph weights."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper


class Cnn2d(torch.nn.Module):
    """NWV's MNIST-style net, smaller: conv 1->4->8 (+BN), FC -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 8, 3)
        self.fc = torch.nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.nn.functional.leaky_relu
        x = torch.nn.functional.max_pool2d(act(self.bn1(self.conv1(x)), 0.2), 2)
        x = torch.nn.functional.max_pool2d(act(self.conv2(x), 0.2), 2)
        return self.fc(torch.flatten(x, 1))


class Cnn1d(torch.nn.Module):
    """An IMU-style 1-D CNN: 6 channels x 32 steps -> 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv1d(6, 8, 5)
        self.conv2 = torch.nn.Conv1d(8, 8, 3)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=2))


class Mlp(torch.nn.Module):
    def __init__(self, n_in: int = 30, n_hidden: int = 64, n_out: int = 2) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, n_hidden)
        self.fc2 = torch.nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def seeded(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and non-trivial batch-norm statistics, reproducibly."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            module.reset_parameters()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


TORCH_MODELS = {
    "cnn2d": (Cnn2d, (2, 1, 14, 14)),
    "cnn1d": (Cnn1d, (2, 6, 32)),
    "mlp": (Mlp, (3, 30)),
}


def torch_model(kind: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    cls, shape = TORCH_MODELS[kind]
    model = seeded(cls(), seed)
    return model, torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 100))


# **** ONNX graphs ****


def _init(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)


def _bn(rng: np.random.Generator, prefix: str, c: int) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.scale"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, c).astype(np.float32), f"{prefix}.bias"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, c).astype(np.float32), f"{prefix}.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), f"{prefix}.var"),
    ]


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def onnx_resnet_block(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """conv-BN-relu-conv-BN + 1x1 shortcut conv, residual Add, relu, global pool, Gemm.

    The second conv's weight is computed in the graph, model-zoo style:
    ConstantOfShape(0.5) * w2_scale, so it arrives as a bound constant after FoldConstant.
    """
    rng = np.random.default_rng(seed)
    shape = numpy_helper.from_array(np.array([8, 8, 3, 3], np.int64), "w2.shape")
    inits = [
        _init(rng, "conv1.weight", 8, 3, 3, 3),
        _init(rng, "conv1.bias", 8),
        *_bn(rng, "bn1", 8),
        shape,
        _init(rng, "w2.scale", 8, 8, 3, 3),
        *_bn(rng, "bn2", 8),
        _init(rng, "shortcut.weight", 8, 3, 1, 1),
        _init(rng, "fc.weight", 10, 8),
        _init(rng, "fc.bias", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"]
        ),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node(
            "ConstantOfShape",
            ["w2.shape"],
            ["ones"],
            value=numpy_helper.from_array(np.array([0.5], np.float32)),
        ),
        helper.make_node("Mul", ["ones", "w2.scale"], ["w2"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c2", "bn2.scale", "bn2.bias", "bn2.mean", "bn2.var"], ["b2"]
        ),
        helper.make_node("Conv", ["x", "shortcut.weight"], ["sc"]),
        helper.make_node("Add", ["b2", "sc"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])
    example = rng.normal(size=(2, 3, 12, 12)).astype(np.float32)
    return _model(nodes, [x], [y], inits), example


def onnx_inception_block(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """Inception/DenseNet-style: 1x1, 3x3 and pool->1x1 branches concatenated with the input
    along channels, a 1x1 conv, global pool, MatMul + Add classifier."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "b1.weight", 4, 3, 1, 1),
        _init(rng, "b1.bias", 4),
        _init(rng, "b2.weight", 4, 3, 3, 3),
        _init(rng, "b2.bias", 4),
        _init(rng, "b3.weight", 4, 3, 1, 1),
        _init(rng, "b3.bias", 4),
        _init(rng, "mix.weight", 6, 15, 1, 1),
        _init(rng, "mix.bias", 6),
        _init(rng, "fc.weight", 6, 5),
        _init(rng, "fc.bias", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "b1.weight", "b1.bias"], ["y1"]),
        helper.make_node("Conv", ["x", "b2.weight", "b2.bias"], ["y2"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["x"], ["p3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p3", "b3.weight", "b3.bias"], ["y3"]),
        helper.make_node("Concat", ["x", "y1", "y2", "y3"], ["cat"], axis=1),
        helper.make_node("Relu", ["cat"], ["rcat"]),
        helper.make_node("Conv", ["rcat", "mix.weight", "mix.bias"], ["mix"]),
        helper.make_node("GlobalAveragePool", ["mix"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc.weight"], ["mm"]),
        helper.make_node("Add", ["mm", "fc.bias"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])
    example = rng.normal(size=(1, 3, 10, 10)).astype(np.float32)
    return _model(nodes, [x], [y], inits), example
