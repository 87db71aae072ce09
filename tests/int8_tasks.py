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
