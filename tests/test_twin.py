"""The torch twin of a task matches its compiled graph, so ONNX tasks get Fisher and packing."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt import examples, suite
from tvm_weightvirt.importance import fisher_nwv
from tvm_weightvirt.optimize import OptimizeConfig
from tvm_weightvirt.packing import pack
from tvm_weightvirt.pipeline import PackConfig
from tvm_weightvirt.twin import TorchTwin


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


@pytest.mark.slow
def test_fisher_and_packing_of_an_onnx_task():
    """Fisher over the twin covers every ONNX weight; a packed plan of an ONNX task and a suite
    task compiles, and the ONNX task's compiled output equals its twin with the plan's weights."""
    model, example = examples.onnx_inception_block()
    task = wv.Task.from_onnx(model, name="onnx_net")
    twin = TorchTwin(task)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3, 10, 10)).astype(np.float32)
    with torch.no_grad():
        y = twin(torch.from_numpy(x)).argmax(1).numpy()  # labels: the model's own predictions
    fisher = fisher_nwv(twin, x, n_samples=20)
    assert set(fisher) == set(task.weights) and all(f.sum() > 0 for f in fisher.values())
    splits = {
        "train": suite.Split(x[:80], y[:80]),
        "val": suite.Split(x[80:100], y[80:100]),
        "test": suite.Split(x[100:], y[100:]),
    }
    onnx_task = suite.SuiteTask("onnx_net", twin, splits)
    wine = suite.load_task("wine")
    plan = pack(
        *suite.packable([wine, onnx_task]),
        PackConfig(optimize=OptimizeConfig(rounds=0)),
        progress=False,
    ).plan
    graphs = [wv.Task.from_torch(wine.model, (wine.example_input(),), name="wine"), task]
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    weights = {k: torch.from_numpy(v) for k, v in plan.read("onnx_net").items()}
    with torch.no_grad():
        expected = torch.func.functional_call(twin, weights, (torch.from_numpy(example),)).numpy()
    np.testing.assert_allclose(runtime.run("onnx_net", example)[0], expected, atol=1e-5, rtol=0)


def test_twin_names_the_ops_it_cannot_run():
    nodes = [helper.make_node("Erf", ["x"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    task = wv.Task.from_onnx(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), name="erf"
    )
    with pytest.raises(wv.IntakeError, match=r"task 'erf': no torch twin for ops \['relax.erf'\]"):
        TorchTwin(task)
