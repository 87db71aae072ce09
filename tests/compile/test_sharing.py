"""A plan with deliberately shared pages changes exactly the outputs it should."""

import numpy as np
import pytest
import torch
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples


@pytest.mark.parametrize("mode", ["materialize", "fused"])
def test_shared_pages_match_torch_with_the_same_weights(mode):
    """Task b's logical pages 0..4 are mapped onto task a's pages 3..7: a is unchanged, b
    computes with a's weights on those pages, exactly as torch does with the same weights."""
    a_model, a_x = examples.torch_model("cnn2d", seed=1)
    b_model, b_x = examples.torch_model("mlp", seed=2)
    a = wv.Task.from_torch(a_model, (a_x,), name="a")
    b = wv.Task.from_torch(b_model, (b_x,), name="b")
    lossless = wv.PagePlan.lossless([a, b], page_size=50)
    n_a = lossless.task("a").layout.n_pages
    table_b = lossless.task("b").page_table.copy()
    table_b[:5] = np.arange(3, 8)  # share a's pages 3..7
    # Drop b's now-unused own pages 0..4 from the pool and renumber: the pool shrinks by 5.
    keep = np.setdiff1d(np.arange(lossless.n_pool_pages), np.arange(n_a, n_a + 5))
    renumber = np.full(lossless.n_pool_pages, -1)
    renumber[keep] = np.arange(len(keep))
    plan = wv.PagePlan(
        50,
        lossless.pool[keep],
        {
            "a": wv.TaskPages(lossless.task("a").layout, renumber[lossless.task("a").page_table]),
            "b": wv.TaskPages(lossless.task("b").layout, renumber[table_b]),
        },
    )
    assert plan.n_pool_pages == lossless.n_pool_pages - 5
    np.testing.assert_array_equal(plan.read("a")["conv1.weight"], a.weights["conv1.weight"])

    runtime = MultitaskRuntime(plan, wv.build(wv.lower([a, b], plan, mode=mode)))
    # a: bit-identical to a alone.
    np.testing.assert_array_equal(
        runtime.run("a", a_x.numpy())[0], StandaloneModel(a).run(a_x.numpy())[0]
    )
    # b: the first 250 weights of fc1.weight now come from a's pages 3..7.
    shared_weights = plan.read("b")
    fc1 = shared_weights["fc1.weight"].reshape(-1)
    np.testing.assert_array_equal(fc1[:250], plan.pool[3:8].reshape(-1))
    np.testing.assert_array_equal(fc1[250:], b.weights["fc1.weight"].reshape(-1)[250:])
    b_model.load_state_dict({k: torch.from_numpy(v) for k, v in shared_weights.items()})
    with torch.no_grad():
        expected = b_model(b_x).numpy()
    got = runtime.run("b", b_x.numpy())[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(got - StandaloneModel(b).run(b_x.numpy())[0]).max() > 1e-3  # b did change
