"""The torch twin of a task matches its compiled graph, so ONNX tasks get Fisher and packing;
a task in kernel layout is the same function to the twin and to TVM."""

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from tvm_weightvirt.passes import ConvWeightsOutputChannelsLast
from tvm_weightvirt.passes.weights_in_kernel_layout import kernel_layout_axes
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.importance import fisher_nwv
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.apps import examples
from tvm_weightvirt.frontend.twin import TorchTwin


@pytest.mark.parametrize("make", [examples.onnx_resnet_block, examples.onnx_inception_block])
def test_twin_of_an_onnx_graph_matches_its_tvm_build(make):
    model, x = make()
    task = wv.Task.from_onnx(model, name="g")
    twin = TorchTwin(task)
    assert sorted(twin.state_dict()) == sorted(task.weights)
    with torch.no_grad():
        out = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, StandaloneModel(task).run(x)[0], atol=1e-5, rtol=0)
    # any batch size
    with torch.no_grad():
        assert twin(torch.from_numpy(np.concatenate([x] * 3))).shape[0] == 3 * x.shape[0]


@pytest.mark.parametrize("kind", list(examples.TORCH_MODELS))
def test_twin_of_a_torch_model_matches_torch(kind):
    model, x = examples.torch_model(kind, 3)
    twin = TorchTwin(wv.Task.from_torch(model, (x,), name=kind))
    with torch.no_grad():
        np.testing.assert_allclose(twin(x).numpy(), model(x).numpy(), atol=1e-5, rtol=0)


class _FoldsItsBatch(torch.nn.Module):
    """A batch folded into a reshape (an RNN's time steps), a parameter broadcast to the batch
    (a ViT's cls token) and a -1 index: traced at one batch size, all three are constants."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 4))

    def forward(self, x):
        y = self.fc(x.reshape(-1, 8)).reshape(x.shape[0], 20, 4)
        return torch.cat([self.cls.expand(x.shape[0], 1, 4), y], 1)[:, -1] * 2 + y[:, 0]


@pytest.mark.parametrize("traced, batch", [(1, 3), (2, 5), (2, 2)])
def test_twin_runs_any_batch_size_of_a_graph_that_folds_its_batch(traced, batch):
    torch.manual_seed(0)
    model = _FoldsItsBatch()
    task = wv.Task.from_torch(model, (torch.randn(traced, 20, 8),), name="folds")
    x = torch.randn(batch, 20, 8)
    with torch.no_grad():
        np.testing.assert_allclose(TorchTwin(task)(x).numpy(), model(x).numpy(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"task 'folds': inputs of shapes \[\(3, 20, 7\)\]"):
        TorchTwin(task)(torch.randn(3, 20, 7))


class _Layers(torch.nn.Module):
    """One layer per op a twin needs beyond the suite's: norms over groups and instances,
    PReLU, resizes, max/min with indices, amax, flip, repeat, Mish and Softplus."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer
        self.gn, self.inorm = torch.nn.GroupNorm(2, 4), torch.nn.InstanceNorm2d(4, affine=True)
        self.prelu = torch.nn.PReLU(4)

    def forward(self, x):  # x [n, 4, 6, 6]
        F = torch.nn.functional
        return {
            "group_norm": lambda: self.gn(x),
            "instance_norm": lambda: self.inorm(x),
            "prelu": lambda: self.prelu(x),
            "nearest": lambda: F.interpolate(x, scale_factor=2, mode="nearest"),
            "bilinear": lambda: F.interpolate(x, size=(9, 4), mode="bilinear"),
            "bilinear_corners": lambda: F.interpolate(
                x, scale_factor=1.5, mode="bilinear", align_corners=True
            ),
            "max_dim": lambda: x.max(2).values + x.min(-1).indices.float(),
            "amax": lambda: x.amax((1, 3)) - x.amin(2).mean(1),
            "flip_repeat": lambda: x.flip(1).repeat(1, 2, 1, 1),
            "mish_softplus": lambda: F.mish(x) + F.softplus(x),
        }[self.layer]()


LAYERS = [
    "group_norm",
    "instance_norm",
    "prelu",
    "nearest",
    "bilinear",
    "bilinear_corners",
    "max_dim",
    "amax",
    "flip_repeat",
    "mish_softplus",
]


@pytest.mark.parametrize("path", ["torch", "onnx"])
@pytest.mark.parametrize("layer", LAYERS)
def test_twin_and_build_of_common_layers_match_torch(layer, path):
    torch.manual_seed(0)
    model = _Layers(layer).eval()
    for p in model.parameters():
        p.data.normal_(0, 1)
    x = torch.randn(2, 4, 6, 6)
    if path == "torch":
        task = wv.Task.from_torch(model, (x[:1],), name=layer)
    else:
        buffer = io.BytesIO()
        torch.onnx.export(model, (x[:1],), buffer, opset_version=17, dynamo=False)
        task = wv.Task.from_onnx(onnx.load_from_string(buffer.getvalue()), name=layer)
    with torch.no_grad():
        expected = model(x).numpy()
        twin = TorchTwin(task)(x).numpy()
    np.testing.assert_allclose(twin, expected, atol=1e-5, rtol=1e-5)
    built = StandaloneModel(task).run(x[:1].numpy())[0]
    np.testing.assert_allclose(built, expected[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [*examples.TORCH_MODELS, "onnx resnet block"])
def test_a_task_in_kernel_layout_is_the_same_function_with_the_same_gradients(kind):
    """Weights permuted into the layout the kernels read: the compiled outputs are bit for bit
    the task's, and through the twin the outputs and each weight's gradient (permuted alike)
    are the task's, so Fisher and retraining see the same model."""
    if kind == "onnx resnet block":
        model, x = examples.onnx_resnet_block()
        task = wv.Task.from_onnx(model, name="g")
    else:
        model, x = examples.torch_model(kind, 3)
        task, x = wv.Task.from_torch(model, (x,), name=kind), x.numpy()
    kernel = task.in_kernel_layout()
    axes = kernel_layout_axes(ConvWeightsOutputChannelsLast()(task.mod)["main"])
    assert axes and all(len(a) == task.weights[n].ndim for n, a in _named(task, axes).items())
    np.testing.assert_array_equal(
        StandaloneModel(kernel).run(x)[0], StandaloneModel(task).run(x)[0]
    )
    outputs, grads = [], []
    for t in (task, kernel):
        twin = TorchTwin(t)
        out = twin(torch.from_numpy(x))
        out.square().sum().backward()
        outputs.append(out.detach().numpy())
        grads.append({n: p.grad.numpy() for n, p in twin.named_parameters()})
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5, rtol=0)
    named_axes = _named(task, axes)
    for name, grad in grads[0].items():
        expected = grad.transpose(named_axes[name]) if name in named_axes else grad
        np.testing.assert_allclose(grads[1][name], expected, atol=1e-4, rtol=1e-5, err_msg=name)


def _named(task, axes: dict[int, list[int]]) -> dict[str, list[int]]:
    names = list(task.weights)
    return {names[i]: a for i, a in axes.items()}


def test_fisher_and_packing_of_onnx_tasks_without_labels():
    """Fisher over the twin covers every ONNX weight; two ONNX tasks with unlabelled data
    (distilled) pack into one pool, and each compiled output equals its twin with the plan's
    weights."""
    rng = np.random.default_rng(0)
    tasks, data, examples_in = [], {}, {}
    for name, make, shape in [
        ("incep", examples.onnx_inception_block, (3, 10, 10)),
        ("res", examples.onnx_resnet_block, (3, 12, 12)),
    ]:
        model, examples_in[name] = make()
        tasks.append(wv.Task.from_onnx(model, name=name))
        data[name] = wv.TaskData(rng.normal(size=(120, *shape)).astype(np.float32))
    fisher = fisher_nwv(TorchTwin(tasks[0]), data["incep"].train, n_samples=20)
    assert set(fisher) == set(tasks[0].weights) and all(f.sum() > 0 for f in fisher.values())
    result = wv.pack(tasks, data, PackConfig(optimize=OptimizeConfig(rounds=0)))
    assert result.report["tasks"]["res"]["objective"] == "distill"
    plan = result.plan
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)))
    for task in tasks:
        weights = {k: torch.from_numpy(v) for k, v in plan.read(task.name).items()}
        x = examples_in[task.name]
        with torch.no_grad():
            expected = torch.func.functional_call(TorchTwin(task), weights, (torch.from_numpy(x),))
        np.testing.assert_allclose(
            runtime.run(task.name, x)[0], expected.numpy(), atol=1e-5, rtol=0
        )


def test_twin_names_the_ops_it_cannot_run():
    nodes = [helper.make_node("Sin", ["x"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    task = wv.Task.from_onnx(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), name="sin"
    )
    with pytest.raises(wv.IntakeError, match=r"task 'sin': no torch twin for ops \['relax.sin'\]"):
        TorchTwin(task)
