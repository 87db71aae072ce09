"""Fisher as NWV and WS define it, against values computed by hand."""

import copy

import numpy as np
import pytest
import torch

from tvm_weightvirt.algorithms.importance import fill_missing, fisher_nwv, fisher_ws
from tvm_weightvirt.apps import suite


def _linear() -> torch.nn.Module:
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return model


def _by_hand(w, b, xs):
    """For a softmax-linear model: d log p_c / dW_jk = (1[j=c] - p_j) x_k, d/db_j = 1[j=c] - p_j;
    F = mean over samples of p_c * grad^2, c the predicted class."""
    fw, fb = np.zeros_like(w), np.zeros_like(b)
    for x in xs:
        z = w @ x + b
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        c = int(p.argmax())
        g = (np.arange(3) == c) - p
        fw += p[c] * np.outer(g, x) ** 2
        fb += p[c] * g**2
    return fw / len(xs), fb / len(xs)


def test_fisher_nwv_matches_hand_computation():
    model = _linear()
    xs = np.array([[0.5, 1.0], [2.0, -1.0], [-1.0, 0.3]], np.float32)
    fisher = fisher_nwv(model, xs, n_samples=3)
    fw, fb = _by_hand(
        model.weight.detach().numpy().astype(np.float64),
        model.bias.detach().numpy().astype(np.float64),
        xs.astype(np.float64),
    )
    np.testing.assert_allclose(fisher["weight"], fw, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(fisher["bias"], fb, rtol=1e-5, atol=1e-8)


def test_gaussian_fisher_of_a_linear_model_is_the_mean_squared_input():
    """Regression (unit-variance Gaussian): F = mean_x sum_k (d f_k / d theta)^2; for a linear
    model d f_k / d W_jk' = 1[j=k] x_k', so F_W[j, k'] = mean x_k'^2 and F_b = 1."""
    model = _linear()
    xs = np.array([[0.5, 1.0], [2.0, -1.0], [-1.0, 0.3]], np.float32)
    fisher = fisher_nwv(model, xs, n_samples=3, likelihood="outputs")
    mean_square = (xs.astype(np.float64) ** 2).mean(0)
    np.testing.assert_allclose(fisher["weight"], np.tile(mean_square, (3, 1)), rtol=1e-6)
    np.testing.assert_allclose(fisher["bias"], np.ones(3), rtol=1e-6)


def test_fisher_uses_n_random_samples():
    model = _linear()
    xs = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    picks = np.random.default_rng(7).choice(500, 100, replace=False)
    fw, fb = _by_hand(
        model.weight.detach().numpy().astype(np.float64),
        model.bias.detach().numpy().astype(np.float64),
        xs[picks].astype(np.float64),
    )
    np.testing.assert_allclose(fisher_nwv(model, xs, n_samples=100, seed=7)["bias"], fb, rtol=1e-5)


def test_ws_fisher_is_min_max_normalised_over_the_network():
    model = _linear()
    xs = np.random.default_rng(1).normal(size=(80, 2)).astype(np.float32)
    ws = fisher_ws(model, xs)
    raw = fisher_nwv(model, xs, n_samples=50)
    flat = np.concatenate([v.ravel() for v in ws.values()])
    assert flat.min() == 0.0 and flat.max() == 1.0
    low = min(v.min() for v in raw.values())
    high = max(v.max() for v in raw.values())
    np.testing.assert_allclose(ws["weight"], (raw["weight"] - low) / (high - low), rtol=1e-5)


def test_weights_without_a_fisher_get_the_tasks_largest():
    weights = {"w": np.array([[-2.0, 1.0]], np.float32), "running_var": np.ones(3, np.float32)}
    filled = fill_missing({"w": np.array([[0.25, 0.5]], np.float32)}, weights)
    np.testing.assert_array_equal(filled["running_var"], [0.5, 0.5, 0.5])  # the task's largest


def _per_sample_loop(model, x, n_samples, seed, likelihood):
    """NWV's Fisher one sample at a time (the formula as first written): the reference the
    batched computation must reproduce."""
    picks = np.random.default_rng(seed).choice(len(x), min(n_samples, len(x)), replace=False)
    params = dict(model.named_parameters())
    dtype = next(iter(params.values())).dtype
    fisher = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    model.eval()
    for i in picks:
        out = model(torch.from_numpy(x[i : i + 1]).to(dtype)).reshape(-1)
        if likelihood == "predicted_class":
            log_p = torch.log_softmax(out, 0)
            terms = [(log_p.max(), float(log_p.max().detach().exp()))]
        else:
            terms = [(value, 1.0) for value in out]
        for value, weight in terms:
            grads = torch.autograd.grad(value, list(params.values()), retain_graph=True)
            for name, g in zip(params, grads):
                fisher[name] += weight * g.double() ** 2
    return {name: (f / len(picks)).numpy() for name, f in fisher.items()}


@pytest.mark.parametrize("likelihood", ["predicted_class", "outputs"])
@pytest.mark.parametrize("name", suite.TEN_TASKS)
def test_batched_fisher_equals_the_per_sample_loop(name, likelihood):
    """On each suite architecture (seeded weights), in float64: batching the per-sample
    gradients changes nothing beyond rounding, for any batch size."""
    torch.manual_seed(0)
    model = suite.SPECS[name].make_model().double()
    n_in = sum(p.numel() for p in model.parameters())
    x = np.random.default_rng(0).normal(size=(60, *model.input_shape)).astype(np.float32)
    expected = _per_sample_loop(model, x, 25, 3, likelihood)
    for batch_size in (None, 1, 7):
        fisher = fisher_nwv(model, x, 25, seed=3, likelihood=likelihood, batch_size=batch_size)
        assert set(fisher) == set(expected) and n_in == sum(f.size for f in fisher.values())
        for key, f in fisher.items():
            # float32 results: one float32 rounding of a float64 value
            np.testing.assert_allclose(f, expected[key], rtol=1e-6, atol=1e-30, err_msg=key)


def test_float32_fisher_is_within_float32_rounding_of_the_float64_one():
    """In float32 (the default) the batched and the per-sample computations round differently;
    where a softmax saturates, 1 - p loses digits in both. Both stay within 1e-4 of the
    float64 value, relative to each tensor's largest entry."""
    torch.manual_seed(1)
    model = suite.SPECS["digits"].make_model()
    x = np.random.default_rng(1).normal(size=(60, *model.input_shape)).astype(np.float32)
    exact = _per_sample_loop(copy.deepcopy(model).double(), x, 40, 0, "predicted_class")
    for fisher in (fisher_nwv(model, x, 40), _per_sample_loop(model, x, 40, 0, "predicted_class")):
        for key, f in fisher.items():
            assert np.abs(f - exact[key]).max() <= 1e-4 * np.abs(exact[key]).max(), key
