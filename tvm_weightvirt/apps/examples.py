"""Small example models (seeded random weights) for the demo, tutorials and tests: torch 2-D CNN,
1-D CNN and MLP; ONNX graphs with residual adds, channel concatenation and in-graph weights;
the model-zoo graphs that ship inside the onnx wheel, with seeded weights."""

from __future__ import annotations

import os

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


# **** a user's own models ****


def _onnx_mlp(layers: list[tuple[np.ndarray, np.ndarray]], name: str) -> onnx.ModelProto:
    """An ONNX MLP (Gemm -> Relu ... -> Gemm, logits out) from (weight [in, out], bias) pairs,
    e.g. a scikit-learn MLP's `coefs_` and `intercepts_`; the batch dimension is symbolic."""
    inits, nodes, current = [], [], "x"
    for i, (w, b) in enumerate(layers):
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"{name}.fc{i}.weight"),
            numpy_helper.from_array(b.astype(np.float32), f"{name}.fc{i}.bias"),
        ]
        out = "y" if i == len(layers) - 1 else f"h{i}"
        nodes.append(
            helper.make_node("Gemm", [current, f"{name}.fc{i}.weight", f"{name}.fc{i}.bias"], [out])
        )
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        current = out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", layers[0][0].shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", layers[-1][0].shape[1]])
    return _model(nodes, [x], [y], inits)


def _sklearn_onnx_classifier(x: np.ndarray, y: np.ndarray, name: str) -> onnx.ModelProto:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier((64, 64), max_iter=200, random_state=0).fit(x, y)
    return _onnx_mlp(list(zip(clf.coefs_, clf.intercepts_)), name)


def write_user_models(folder: str) -> dict[str, dict[str, str]]:
    """Three trained models a user might bring, none of them in the suite, with their data, in
    `folder`: `sensors` (ONNX MLP, 4 classes, labelled splits), `gestures` (ONNX MLP, 3 classes,
    only unlabelled training samples: packed by distillation) and `friedman` (a torch
    regression MLP on Friedman's nonlinear benchmark, saved by `torch.export.save`; train and
    test splits). Also writes `suite.toml`, the manifest for `wvirt pack`. Returns
    `{name: {"model": path, "data": path}}`."""
    import os

    from sklearn.datasets import make_classification, make_friedman1
    from sklearn.model_selection import train_test_split

    os.makedirs(folder, exist_ok=True)
    files = {}

    def write(name: str, model_file: str, **arrays) -> None:
        data_file = os.path.join(folder, f"{name}.npz")
        np.savez(
            data_file,
            **{k: v.astype(np.float32 if k[0] == "x" else v.dtype) for k, v in arrays.items()},
        )
        files[name] = {"model": os.path.join(folder, model_file), "data": data_file}

    # sensors: labelled train / val / test
    x, y = make_classification(
        2000, 20, n_informative=12, n_classes=4, class_sep=1.5, random_state=0
    )
    x = (x - x.mean(0)) / x.std(0)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=0)
    x_va, x_te, y_va, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=0
    )
    onnx.save(_sklearn_onnx_classifier(x_tr, y_tr, "sensors"), os.path.join(folder, "sensors.onnx"))
    write(
        "sensors",
        "sensors.onnx",
        x_train=x_tr,
        y_train=y_tr,
        x_val=x_va,
        y_val=y_va,
        x_test=x_te,
        y_test=y_te,
    )
    # gestures: the user has the model and unlabelled samples only
    x, y = make_classification(
        1500, 16, n_informative=10, n_classes=3, class_sep=1.2, random_state=1
    )
    x = (x - x.mean(0)) / x.std(0)
    onnx.save(_sklearn_onnx_classifier(x, y, "gestures"), os.path.join(folder, "gestures.onnx"))
    write("gestures", "gestures.onnx", x_train=x)
    # friedman: torch regression on Friedman's nonlinear benchmark; no validation split given
    x, y = make_friedman1(1500, n_features=10, noise=0.5, random_state=2)
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr.astype(np.float32)), torch.from_numpy(y_tr.astype(np.float32))
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(xt)[:, 0], yt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    from ..frontend.task import quiet_torch_export

    with quiet_torch_export():
        program = torch.export.export(model.eval(), (xt[:1],))
    torch.export.save(program, os.path.join(folder, "friedman.pt2"))
    write("friedman", "friedman.pt2", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    with open(os.path.join(folder, "suite.toml"), "w") as f:
        for name, objective in [
            ("sensors", "classification"),
            ("gestures", "distill"),
            ("friedman", "regression"),
        ]:
            model_file = os.path.basename(files[name]["model"])
            f.write(
                f'[tasks.{name}]\nmodel = "{model_file}"\ndata = "{name}.npz"\nobjective = "{objective}"\n\n'
            )
        f.write("[pack]\npool_pages = 130\nrounds = 4\niterations = 300\n")
    return files


def load_user_models(files: dict[str, dict[str, str]]) -> tuple[list, dict]:
    """`write_user_models`' files as tasks and their data, as `wv.pack` takes them (the
    regression model with the regression objective)."""
    from ..algorithms.data import TaskData
    from ..frontend.task import Task

    loaders = {"sensors": Task.from_onnx, "gestures": Task.from_onnx, "friedman": Task.from_pt2}
    tasks = [load(files[name]["model"], name=name) for name, load in loaders.items()]
    objectives = {"friedman": "regression"}
    data = {n: TaskData.from_npz(files[n]["data"], objectives.get(n)) for n in loaders}
    return tasks, data


# The ONNX model-zoo graphs shipped in the onnx wheel (weights as ConstantOfShape fills).
ZOO_FOLDER = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
ZOO_GRAPHS = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]


def op_calls(task) -> list:
    """The operator calls (`relax.Call` of a `tvm.ir.Op`) of a Task's main function, in
    post-order."""
    import tvm
    from tvm import relax

    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            calls.append(expr)

    relax.analysis.post_order_visit(task.mod["main"].body, visit)
    return calls


def zoo_onnx(graph: str, seed: int = 0) -> onnx.ModelProto:
    """A model-zoo graph (`ZOO_GRAPHS`) with seeded random weights, as ONNX (the graph ONNX
    Runtime and `Task.from_onnx` read alike). The zoo's own are constant fills
    (`ConstantOfShape`), and plain N(0, 0.05) weights would push these deep graphs into a
    saturated (one-hot) or flat softmax, or into denormals: conv and Gemm weights are
    He-scaled instead, batch-norm scales and variances and the per-channel multiplies are near
    1, everything else (biases, means) is N(0, 0.05)."""
    if graph not in ZOO_GRAPHS:
        raise ValueError(f"no model-zoo graph '{graph}' (has {ZOO_GRAPHS})")
    model = onnx.load(os.path.join(ZOO_FOLDER, f"light_{graph}.onnx"))
    initializers = {t.name: t for t in model.graph.initializer}
    fills = {n.output[0]: n for n in model.graph.node if n.op_type == "ConstantOfShape"}
    consumer = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumer.setdefault(name, (node, i))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (node, i) in consumer.items():
        if name in fills:
            shape = numpy_helper.to_array(initializers[fills[name].input[0]])
        elif name in initializers and initializers[name].data_type == onnx.TensorProto.FLOAT:
            shape = initializers[name].dims
        else:
            continue
        weights[name] = _zoo_weight(rng, node, i, tuple(int(d) for d in shape))
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(
        [t for n, t in initializers.items() if n not in weights]
        + [numpy_helper.from_array(w, n) for n, w in weights.items()]
    )
    nodes = [n for n in model.graph.node if n.op_type != "ConstantOfShape"]
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    return model


def _zoo_weight(rng: np.random.Generator, node, i: int, shape: tuple[int, ...]) -> np.ndarray:
    """The seeded weight input `i` of `node` (see `zoo_onnx`)."""
    if node.op_type == "Conv" and i == 1:  # OIHW: fan-in I*H*W
        w = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
    elif node.op_type == "Gemm" and i == 1:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        w = rng.normal(0, np.sqrt(1 / shape[1 if trans_b else 0]), shape)
    elif (node.op_type == "BatchNormalization" and i in (1, 4)) or node.op_type == "Mul":
        w = rng.uniform(0.9, 1.1, shape)  # gamma, running variance, channel scale
    else:
        w = rng.normal(0, 0.05, shape)
    return w.astype(np.float32)


def zoo_task(graph: str, seed: int = 0, name: str | None = None):
    """`zoo_onnx(graph, seed)` as a Task."""
    from ..frontend.task import Task

    return Task.from_onnx(zoo_onnx(graph, seed), name=name or graph)
