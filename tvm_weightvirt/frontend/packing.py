"""`wv.pack`: any Tasks (ONNX, torch, Relax) with their TaskData, checked together, trained
through their torch twins by the packing pipeline of `pipeline.py`."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..algorithms.data import Split, TaskData
from ..algorithms.objectives import Objective
from ..algorithms.output_objectives import OutputKind, distill_outputs, one_output_objective
from ..algorithms.pipeline import PackConfig, PackResult, PackTask, pack_models
from ..algorithms.training import model_outputs
from ..plan import PagePlan, check_unique_names
from .outputs import output_kinds
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
            prepared.append(
                _pack_task(t, twins[t.name], data[t.name], splits, samples, notes[t.name])
            )
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
    task: Task,
    twin: TorchTwin,
    task_data: TaskData,
    splits: dict[str, Split],
    min_fisher: int,
    notes: list[str],
) -> PackTask:
    """The task's splits checked against its model, cast to its input dtype, with the targets
    its objective trains on; what each output trains with is added to `notes`."""
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
    outputs = output_kinds(task, task_data.outputs, task_data.output_weights)
    try:
        with torch.no_grad():
            probe = twin(torch.from_numpy(splits["train"].x[:2]))
    except Exception as err:
        raise ValueError(f"{where}: the model cannot run on the training data: {err}") from err
    notes += [f"output '{o.name}' ({o.why}): {o.describe()}" for o in outputs]
    labelled = splits["train"].y is not None
    objective = task_data.objective
    if len(outputs) > 1:
        return _pack_several_outputs(task, twin, splits, objective, outputs, where, notes)
    if task_data.output_weights:
        raise ValueError(
            f"{where}: output weights weigh the losses of a model of several outputs; this "
            f"model has one ('{outputs[0].name}')"
        )
    probe = probe.numpy()
    if objective is None:
        objective = "classification" if labelled else "distill"
    if isinstance(objective, str):
        objective = one_output_objective(objective, outputs[0])
    if not isinstance(objective, Objective):
        raise ValueError(f"{where}: objective must be a name or an Objective, got {objective!r}")
    targets = {
        split: _targets(where, split, s, objective, twin, probe) for split, s in splits.items()
    }
    return PackTask(
        task.name, twin, {k: Split(s.x, targets[k]) for k, s in splits.items()}, objective
    )


def _pack_several_outputs(
    task: Task,
    twin: TorchTwin,
    splits: dict[str, Split],
    objective,
    outputs: list[OutputKind],
    where: str,
    notes: list[str],
) -> PackTask:
    """A model of several outputs trains toward the original model's outputs, all of them at
    once: its twin returns them joined, and `distill_outputs` splits them again."""
    names = ", ".join(o.name for o in outputs)
    if objective not in (None, "distill") and not isinstance(objective, Objective):
        raise ValueError(
            f"{where}: the model has {len(outputs)} outputs ({names}); a model of several "
            f"outputs packs by distillation toward its own outputs (objective 'distill'), "
            f"not '{objective}'"
        )
    if splits["train"].y is not None and objective is None:
        notes.append(f"labels unused: a model of {len(outputs)} outputs packs by distillation")
    if not any(o.weight > 0 for o in outputs):
        raise ValueError(f"{where}: every output ({names}) has weight 0: nothing to train")
    twin.join_outputs = True
    targets = {k: model_outputs(twin, s.x) for k, s in splits.items()}
    bounds = np.cumsum([0] + [o.size for o in outputs])
    train = targets["train"]
    mean_squares = [float(np.mean(train[:, a:b] ** 2)) for a, b in zip(bounds, bounds[1:])]
    if not isinstance(objective, Objective):  # a user's Objective reads the joined outputs
        objective = distill_outputs(outputs, mean_squares)
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
