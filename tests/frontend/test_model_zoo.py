"""A real architecture: SqueezeNet 1.0 from the ONNX model zoo (as shipped in the onnx wheel,
weights computed in-graph by ConstantOfShape), merged with a small ResNet-style block."""

import os

import numpy as np
import onnx
import pytest
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples

ZOO = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


@pytest.mark.slow
def test_squeezenet_merged_with_a_resnet_block_is_lossless():
    squeezenet = wv.Task.from_onnx(os.path.join(ZOO, "light_squeezenet.onnx"), name="squeezenet")
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
    # ceil(1,235,496 / 512) (every squeezenet tensor is already 16-aligned) + the block's 978
    # weights on 1,066 aligned slots: 3 pages
    assert plan.n_pool_pages == 2414 + 3
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, mode="materialize")))
    inputs = {
        "squeezenet": rng.normal(size=(1, 3, 224, 224)).astype(np.float32),
        "resnet": resnet_x,
    }
    alone = {t.name: StandaloneModel(t).run(inputs[t.name])[0] for t in tasks}
    for name in ["squeezenet", "resnet", "squeezenet"]:
        np.testing.assert_array_equal(runtime.run(name, inputs[name])[0], alone[name])
