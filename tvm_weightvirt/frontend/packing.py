"""`wv.pack`: any Tasks (ONNX, torch, Relax) with their TaskData, checked together, trained
through their torch twins by the packing pipeline of `pipeline.py`."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..algorithms.data import Split, TaskData
from ..algorithms.objectives import Objective, objective_named
from ..algorithms.pipeline import PackConfig, PackResult, PackTask, pack_models
from ..algorithms.training import model_outputs
from ..plan import PagePlan, check_unique_names
from .task import IntakeError, Task
from .twin import TorchTwin, missing_twin_ops

log = logging.getLogger(__name__)

MIN_FISHER_SAMPLES = 10  # fewer, and NWV's Fisher averages over a handful of gradients


def pack(
    tasks: list[Task],
    data: dict[str, TaskData],
    config: PackConfig = PackConfig(),
    resume: PagePlan | None = None,
) -> PackResult:
    """Pack `tasks` into one page plan: Fisher -> (separation) -> matching -> joint retraining
    on each task's `data[task.name]`. Every input is checked before any work; the problems of
    all tasks are reported together (the first one of each task).

    Example:
        result = wv.pack([kws, har], {"kws": wv.TaskData.from_npz("kws.npz"),
                                      "har": wv.TaskData((x, y), objective="regression")})
        wv.save_wvpack("suite.wvpack", result.plan, [kws, har], report=result.report)
    """
    if not tasks:
        raise ValueError("no tasks to pack")
    check_unique_names([t.name for t in tasks])
    _check_names(tasks, data)
    # Step 1. One torch twin per task; every op without a twin, of every task, in one error.
    missing = {t.name: missing_twin_ops(t) for t in tasks}
    missing = {name: ops for name, ops in missing.items() if ops}
    if missing:
        listed = "; ".join(f"task '{name}': {', '.join(ops)}" for name, ops in missing.items())
        raise IntakeError(f"no torch twin (needed to train) for these ops: {listed}")
    twins = {t.name: TorchTwin(t) for t in tasks}
    # Step 2. Data against models: splits, shapes, dtypes, labels, objectives.
    samples = config.fisher_samples or MIN_FISHER_SAMPLES
    prepared, notes, problems = [], {}, []
    for t in tasks:
        try:
            splits, notes[t.name] = data[t.name].resolve(t.name, config.seed)
            prepared.append(_pack_task(t, twins[t.name], data[t.name], splits, samples))
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError("\n".join(problems))
    for name, lines in notes.items():
        for line in lines:
            log.info("task '%s': %s", name, line)
    # Step 3. The algorithm.
    result = pack_models(prepared, config, resume)
    for t in prepared:
        result.report["tasks"][t.name]["data"] = {
            "source": data[t.name].source,
            "samples": {split: len(s) for split, s in t.splits.items()},
            "notes": notes[t.name],
        }
    return result


def _check_names(tasks: list[Task], data: dict[str, TaskData]) -> None:
    names = [t.name for t in tasks]
    extra = sorted(set(data) - set(names))
    if extra:
        raise ValueError(f"data for {extra}, which are not tasks (tasks: {names})")
    without = [n for n in names if n not in data]
    if without:
        raise ValueError(
            f"tasks {without} have no data: sharing pages retrains every task on its data; "
            "give data for each task, or ask for a lossless plan (PagePlan.lossless, "
            "`wvirt pack --lossless`)"
        )


def _pack_task(
    task: Task, twin: TorchTwin, task_data: TaskData, splits: dict[str, Split], min_fisher: int
) -> PackTask:
    """The task's splits checked against its model, cast to its input dtype, with the targets
    its objective trains on."""
    where = f"task '{task.name}' ({task_data.source})"
    if task.num_inputs != 1:
        raise ValueError(
            f"{where}: packing with data takes models of one input, this one has {task.num_inputs}"
        )
    ((shape, dtype),) = task.input_types
    for split, s in splits.items():
        if tuple(s.x.shape[1:]) != shape[1:]:
            raise ValueError(
                f"{where}: x_{split} has samples of shape {tuple(s.x.shape[1:])}, the model "
                f"input is {shape} ({shape[1:]} per sample)"
            )
        if s.x.dtype.kind != "f" and np.dtype(dtype).kind == "f":
            raise ValueError(
                f"{where}: x_{split} is {s.x.dtype}, the model takes {dtype}: scale and convert "
                f"it (e.g. x.astype(np.{dtype}))"
            )
    if len(splits["train"]) < min_fisher:
        raise ValueError(
            f"{where}: {len(splits['train'])} training samples, the Fisher needs at least "
            f"{min_fisher}"
        )
    splits = {k: Split(s.x.astype(dtype, copy=False), s.y) for k, s in splits.items()}
    try:
        with torch.no_grad():
            probe = twin(torch.from_numpy(splits["train"].x[:2]))
    except Exception as err:
        raise ValueError(f"{where}: the model cannot run on the training data: {err}") from err
    if not isinstance(probe, torch.Tensor):
        raise ValueError(
            f"{where}: the model has {len(probe)} outputs; packing trains models with one "
            "(export the one its objective is about, e.g. the logits)"
        )
    probe = probe.numpy()
    # [N, C >= 2], or [N, C, 1, ...] as convolutional heads give (the model zoo's)
    classifier = probe.ndim >= 2 and probe.shape[1] >= 2 and all(d == 1 for d in probe.shape[2:])
    labelled = splits["train"].y is not None
    objective = task_data.objective
    if objective is None:
        objective = "classification" if labelled else "distill"
    if isinstance(objective, str):
        objective = objective_named(objective, classifier)
    if not isinstance(objective, Objective):
        raise ValueError(f"{where}: objective must be a name or an Objective, got {objective!r}")
    targets = {
        split: _targets(where, split, s, objective, twin, probe) for split, s in splits.items()
    }
    return PackTask(
        task.name, twin, {k: Split(s.x, targets[k]) for k, s in splits.items()}, objective
    )


def _targets(
    where: str, split: str, s: Split, objective: Objective, twin: TorchTwin, probe: np.ndarray
) -> np.ndarray:
    if objective.targets == "original_outputs":
        return model_outputs(twin, s.x)
    if s.y is None:
        raise ValueError(
            f"{where}: objective '{objective.name}' needs y_{split} (labels); without labels, "
            "use the 'distill' objective"
        )
    if objective.targets == "labels":
        if probe.ndim != 2:
            raise ValueError(
                f"{where}: classification needs outputs [N, classes], the model gives "
                f"{probe.shape[1:]} per sample"
            )
        n_classes = probe.shape[1]
        if s.y.ndim != 1 or (s.y.dtype.kind == "f" and not np.all(s.y == np.round(s.y))):
            raise ValueError(
                f"{where}: y_{split} must hold integer class ids for classification "
                f"(got {s.y.dtype}, shape {s.y.shape})"
            )
        labels = s.y.astype(np.int64)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"{where}: y_{split} spans [{labels.min()}, {labels.max()}], the model has "
                f"{n_classes} classes (ids 0..{n_classes - 1})"
            )
        return labels
    per_sample = int(np.prod(probe.shape[1:]))
    if s.y[0].size != per_sample:
        raise ValueError(
            f"{where}: y_{split} has {s.y[0].size} values per sample, the model outputs "
            f"{per_sample}"
        )
    return s.y.astype(np.float32).reshape(len(s.y), *probe.shape[1:])
