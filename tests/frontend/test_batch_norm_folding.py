"""Statistics are not weights: intake folds inference batch norms (`fold_batch_norms`) into the
convolution before them, or into a per-channel affine, so no running mean or variance is ever
paged, matched or shared."""

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from tvm_weightvirt.runtime import StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps.examples import op_calls, seeded


class ConvBn(nn.Module):
    """Conv without bias + BN (folded into the conv, a bias appears), conv with bias + BN (the
    bias absorbs it), Linear + BatchNorm1d (an affine: scale and shift)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, bias=False)
        self.bn_a = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 1)
        self.bn_b = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.bn_fc = nn.BatchNorm1d(5)

    def forward(self, x):
        x = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))
        return self.bn_fc(self.fc(x.flatten(1)))


def _onnx(model, x):
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, opset_version=17, dynamo=False)
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("path", ["torch", "onnx"])
def test_batch_norms_fold_and_outputs_stay(path):
    model = seeded(ConvBn(), 0)
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    if path == "torch":
        task = wv.Task.from_torch(model, (x,), name="m")
    else:
        task = wv.Task.from_onnx(_onnx(model, x), name="m", shape_dict={"input.1": [2, 2, 8, 8]})
    ops = {call.op.name for call in op_calls(task)}
    assert "relax.nn.batch_norm" not in ops
    # conv a: 72 weights + a new bias of 4; conv b: 16 + 4; fc: 720 + 5; bn_fc: scale + shift
    assert task.n_weights == 72 + 4 + 16 + 4 + 720 + 5 + 5 + 5
    assert len(task.weights) == 8
    if path == "torch":
        assert not [n for n in task.weights if "running" in n or "mean" in n or "var" in n]
        assert {"a.weight", "bn_a.bias", "b.weight", "b.bias", "bn_fc.weight"} <= set(task.weights)
    out = StandaloneModel(task).run(x.numpy())[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_a_batch_norm_after_a_shared_conv_output_becomes_an_affine():
    """The conv's output is also read elsewhere: scaling its weight would change that reader,
    so the batch norm becomes `x * scale + shift` and the conv keeps its weight."""

    class TwoReaders(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = seeded(TwoReaders(), 0)
    x = torch.randn(1, 2, 4, 4)
    task = wv.Task.from_torch(model, (x,), name="m")
    np.testing.assert_array_equal(task.weights["conv.weight"], model.conv.weight.detach().numpy())
    assert task.weights["bn.weight"].shape == (3, 1, 1)
    assert set(task.weights) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias"}
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(
        StandaloneModel(task).run(x.numpy())[0], expected, rtol=1e-5, atol=1e-5
    )
