"""A real architecture: SqueezeNet 1.0 from the ONNX model zoo (as shipped in the onnx wheel,
weights computed in-graph by ConstantOfShape), merged with a small ResNet-style block."""

import os

import numpy as np
import pytest
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples


@pytest.mark.slow
def test_squeezenet_merged_with_a_resnet_block_is_lossless():
    squeezenet = wv.Task.from_onnx(
        os.path.join(examples.ZOO_FOLDER, "light_squeezenet.onnx"), name="squeezenet"
    )
    # 26 convs, weight + bias each; all 1,235,496 weights were bound constants.
    assert len(squeezenet.weights) == 52 and squeezenet.n_weights == 1_235_496
    # The zoo's in-graph weights are constant fills: random ones make the comparison meaningful.
    rng = np.random.default_rng(0)
    squeezenet.weights = {
        k: rng.normal(0, 0.05, w.shape).astype(np.float32) for k, w in squeezenet.weights.items()
    }
    resnet_model, resnet_x = examples.onnx_resnet_block()
    resnet = wv.Task.from_onnx(resnet_model, name="resnet")
    tasks = [squeezenet, resnet]
    plan = wv.PagePlan.lossless(tasks, page_size=512)
    # ceil(1,235,496 / 512) (every squeezenet tensor is already 16-aligned) + the block's 922
    # weights (its batch norms folded) on 952 aligned slots: 2 pages
    assert plan.n_pool_pages == 2414 + 2
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, mode="materialize")))
    inputs = {
        "squeezenet": rng.normal(size=(1, 3, 224, 224)).astype(np.float32),
        "resnet": resnet_x,
    }
    alone = {t.name: StandaloneModel(t).run(inputs[t.name])[0] for t in tasks}
    for name in ["squeezenet", "resnet", "squeezenet"]:
        np.testing.assert_array_equal(runtime.run(name, inputs[name])[0], alone[name])


@pytest.mark.slow
def test_squeezenet_packed_end_to_end_on_a_tiny_pool():
    """Intake -> batched Fisher -> fast matching -> retraining -> build -> switch -> run, for
    SqueezeNet (1.2 M weights) and a ResNet-style block on a pool of 1,000 pages of 512 (a
    fifth of SqueezeNet's 2,414): pages are shared within SqueezeNet too. Each compiled output
    equals its torch twin on the packed weights."""
    import torch

    from tvm_weightvirt.algorithms.optimize import OptimizeConfig
    from tvm_weightvirt.algorithms.pipeline import PackConfig
    from tvm_weightvirt.frontend.twin import TorchTwin

    squeezenet = examples.zoo_task("squeezenet", seed=0)
    resnet_model, resnet_x = examples.onnx_resnet_block()
    tasks = [squeezenet, wv.Task.from_onnx(resnet_model, name="resnet")]
    rng = np.random.default_rng(0)
    data = {
        t.name: wv.TaskData(
            *(rng.normal(size=(n, *t.input_types[0][0][1:])).astype(np.float32) for n in (12, 4, 4))
        )
        for t in tasks
    }
    config = PackConfig(
        page_size=512,
        pool_pages=1000,
        share_within_task=True,
        match="fast",
        fisher_samples=10,
        optimize=OptimizeConfig(rounds=1, iterations=2, batch_size=4, eval_every=2),
    )
    result = wv.pack(tasks, data, config)
    plan = result.plan
    assert plan.n_pool_pages == 1000 and plan.task("squeezenet").layout.n_pages == 2414
    assert result.report["tasks"]["squeezenet"]["objective"] == "distill"
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, mode="materialize")))
    inputs = {"squeezenet": data["squeezenet"].test[:1], "resnet": resnet_x}
    for name in ["squeezenet", "resnet", "squeezenet"]:
        task = next(t for t in tasks if t.name == name)
        weights = {k: torch.from_numpy(v) for k, v in plan.read(name).items()}
        with torch.no_grad():
            expected = torch.func.functional_call(
                TorchTwin(task), weights, (torch.from_numpy(inputs[name]),)
            ).numpy()
        np.testing.assert_allclose(
            runtime.run(name, inputs[name])[0], expected, rtol=1e-4, atol=1e-4 * abs(expected).max()
        )
