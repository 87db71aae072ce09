"""What packing fits and measures a task by, beyond NWV's labels on training inputs:
`OptimizeConfig.distill_temperature` (joint retraining fits each task's separate model: its
outputs on the training inputs, checkpoints by agreement on the validation inputs) and
`PackConfig.fisher_split` (the Fisher read on validation inputs)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tvm_weightvirt.algorithms.data import SPLITS, Split, TaskData
from tvm_weightvirt.algorithms.importance import fisher_ws
from tvm_weightvirt.algorithms.objectives import (
    CLASSIFICATION,
    DISTILL_CLASSIFIER,
    DISTILL_VALUES,
    REGRESSION,
    agreement,
    toward_original_outputs,
)
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.separation import SeparationConfig
from tvm_weightvirt.algorithms.training import model_outputs
from tvm_weightvirt.apps import suite
from tvm_weightvirt.frontend.packing import pack


def test_a_classifier_fits_softened_original_outputs_and_selects_by_agreement():
    objective = toward_original_outputs(CLASSIFICATION, temperature=4.0)
    assert objective.metric is agreement and objective.targets == "original_outputs"
    original = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    outputs = torch.tensor([[1.0, 0.0, 0.5], [0.5, 2.0, -1.0]])
    assert float(objective.loss(original, original)) == pytest.approx(0.0, abs=1e-6)
    # Hinton et al.: T^2 * KL(softmax(original / T) || softmax(outputs / T)), batch mean
    p, q = F.softmax(original / 4, 1), F.softmax(outputs / 4, 1)
    expected = 16 * float((p * (p.log() - q.log())).sum(1).mean())
    assert float(objective.loss(outputs, original)) == pytest.approx(expected, rel=1e-5)


def test_other_objectives_fit_original_outputs_their_own_way():
    assert toward_original_outputs(REGRESSION, 4.0) is DISTILL_VALUES
    assert toward_original_outputs(DISTILL_CLASSIFIER, 4.0) is DISTILL_CLASSIFIER
    with pytest.raises(ValueError, match="distill_temperature must be > 0 .* got 0"):
        OptimizeConfig(distill_temperature=0)


def _with_labels(task: suite.SuiteTask, relabel) -> TaskData:
    """The task's splits with every label passed through `relabel`."""
    splits = (Split(task.splits[s].x, relabel(task.splits[s].y)) for s in SPLITS)
    return TaskData(*splits, objective="classification")


@pytest.mark.slow
@pytest.mark.parametrize("distilled", [True, False])
def test_retraining_toward_the_originals_never_reads_a_label(distilled):
    """Shifting every label by one class changes nothing a distilled pack computes (WS's
    Fisher and the byte rule read none, retraining and its checkpoints read the separate
    models' outputs): the plans are bit-identical. Retraining on the labels is changed by
    them (the check can fail)."""
    tasks = suite.load_suite(["wine", "iris"])
    optimize = OptimizeConfig(rounds=1, iterations=30, eval_every=10)
    if distilled:
        optimize = replace(optimize, distill_temperature=2.0)
    config = PackConfig(
        share_within_task=True,
        separation=SeparationConfig(l1_budget_bytes=24_000, l2_budget_bytes=4_000, rule="bytes"),
        optimize=optimize,
    )
    plans = []
    for relabel in (lambda y: y, lambda y: (y + 1) % 3):  # wine and iris have 3 classes
        data = {t.name: _with_labels(t, relabel) for t in tasks}
        plans.append(pack([t.task for t in tasks], data, config).plan)
    same = np.array_equal(plans[0].pool, plans[1].pool) and all(
        np.array_equal(plans[0].task(n).exclusive_pages, plans[1].task(n).exclusive_pages)
        for n in plans[0].tasks
    )
    assert same == distilled


@pytest.mark.slow
def test_the_fisher_reads_the_inputs_of_the_split_it_is_told(monkeypatch):
    """`fisher_split="val"`: WS's Fisher (and so the exclusive pages) comes from each task's
    validation inputs, not its training inputs; any other split name is refused."""
    import tvm_weightvirt.algorithms.pipeline as pipeline

    tasks = suite.load_suite(["wine", "iris"])
    read = []

    def recording_fisher(model, x, *args, **kwargs):
        read.append(x)
        return fisher_ws(model, x, *args, **kwargs)

    monkeypatch.setattr(pipeline, "fisher_ws", recording_fisher)
    separation = SeparationConfig(tpr=0.5)
    for split in ("train", "val"):
        read.clear()
        config = PackConfig(fisher_split=split, separation=separation, optimize=OptimizeConfig(0))
        pack(*suite.packable(tasks), config)
        assert [x.shape for x in read] == [t.splits[split].x.shape for t in tasks]
        assert all(np.array_equal(x, t.splits[split].x) for x, t in zip(read, tasks))
    with pytest.raises(ValueError, match="fisher_split must be 'train' or 'val', got 'test'"):
        pack(*suite.packable(tasks), PackConfig(fisher_split="test", separation=separation))


@pytest.mark.slow
def test_a_distilled_refinement_weighs_tasks_by_their_distance_from_the_separate_models():
    """A task retrained toward its separate model fits it on the training inputs, so the byte
    rules' refinement reads what packing cost it on the validation inputs: 100 - top-1
    agreement with the separate model there (pp), the metric its checkpoints were chosen by.
    Each pack's losses are the kept plan's when it is kept, and weight the next pack."""
    tasks = suite.load_suite(["wine", "iris"])
    separation = SeparationConfig(
        l1_budget_bytes=24_000, l2_budget_bytes=4_000, rule="bytes_even", refine_rounds=1
    )
    optimize = OptimizeConfig(rounds=0, distill_temperature=2.0)  # matched pages, far off
    config = PackConfig(share_within_task=True, separation=separation, optimize=optimize)
    result = pack(*suite.packable(tasks), config)
    first, second = result.report["refinement"]
    assert second["task_weights"] == {n: 1.0 + first["loss_pp"][n] for n in ("wine", "iris")}
    (kept,) = [p for p in (first, second) if p["kept"]]
    for task in tasks:
        x = task.splits["val"].x
        packed = model_outputs(task.model_from_plan(result.plan), x)
        distance = 100.0 - agreement(packed, model_outputs(task.model, x))
        assert kept["loss_pp"][task.name] == pytest.approx(distance, abs=1e-9)
    assert min(first["loss_pp"].values()) > 10  # (the check can fail)
