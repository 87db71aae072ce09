"""What a task's outputs hold (logits, probabilities, values), read from its graph or given,
and the losses packing distills each with: a model of several outputs packs, each output
trained by its own loss and reported on its own."""

import io

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.objectives import (
    DISTILL_CLASSIFIER,
    relative_error,
    toward_original_outputs,
)
from tvm_weightvirt.algorithms.output_objectives import (
    OutputKind,
    distill_outputs,
    one_output_objective,
    output_loss,
)
from tvm_weightvirt.frontend.outputs import output_kinds, output_names


class Detector(torch.nn.Module):
    """A face-detector stage's shape: a score map (softmax over 2 classes), a box map
    (4 values) and an objectness map (sigmoid)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.score = torch.nn.Conv2d(8, 2, 1)
        self.box = torch.nn.Conv2d(8, 4, 1)
        self.objectness = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return torch.softmax(self.score(h), 1), self.box(h), torch.sigmoid(self.objectness(h))


def _detector_onnx(seed: int) -> onnx.ModelProto:
    f = io.BytesIO()
    torch.onnx.export(
        Detector(seed).eval(),
        (torch.zeros(1, 3, 12, 12),),
        f,
        input_names=["image"],
        output_names=["score", "box", "objectness"],
        dynamo=False,
    )
    return onnx.load_from_string(f.getvalue())


def _detector_task(seed: int, name: str) -> wv.Task:
    return wv.Task.from_onnx(_detector_onnx(seed), name=name)


def test_output_kinds_are_read_from_the_graph_and_named_as_in_the_onnx_file():
    kinds = output_kinds(_detector_task(0, "det"))
    assert [(k.name, k.kind, k.axis, k.categorical) for k in kinds] == [
        ("score", "probs", 1, True),
        ("box", "values", 1, True),
        ("objectness", "probs", 1, False),
    ]
    assert [k.why for k in kinds] == [
        "a trailing softmax",
        "no trailing softmax or sigmoid",
        "a trailing sigmoid",
    ]
    torch_task = wv.Task.from_torch(Detector(0), (torch.zeros(1, 3, 12, 12),), "det")
    assert output_names(torch_task) == ["output0", "output1", "output2"]


def test_given_kinds_and_weights_win_and_unknown_outputs_are_named():
    task = _detector_task(0, "det")
    kinds = output_kinds(task, {"box": "logits", "score": "values"}, {"objectness": 0.0})
    assert [(k.kind, k.why, k.weight) for k in kinds] == [
        ("values", "given", 1.0),
        ("logits", "given", 1.0),
        ("probs", "a trailing sigmoid", 0.0),
    ]
    with pytest.raises(ValueError, match=r"no output named \['boxes'\] \(its outputs: score, box"):
        output_kinds(task, {"boxes": "values"})
    with pytest.raises(ValueError, match="kind 'probabilities' is none of"):
        output_kinds(task, {"box": "probabilities"})
    one = wv.Task.from_torch(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), "one")
    x = np.zeros((20, 3), np.float32)
    with pytest.raises(ValueError, match="this model has one \\('output'\\)"):
        wv.pack([one], {"one": wv.TaskData(x, output_weights={"output": 2.0})})


def test_a_softmax_output_is_distilled_on_its_probabilities_not_on_their_softmax():
    rng = np.random.default_rng(0)
    p = torch.softmax(torch.from_numpy(rng.normal(size=(5, 3))), 1)
    q = torch.softmax(torch.from_numpy(rng.normal(size=(5, 3))), 1)
    probs = OutputKind("prob", (1, 3), "probs")
    distill = one_output_objective("distill", probs)
    kl = float((p * (p.log() - q.log())).sum(1).mean())
    assert float(distill.loss(q, p)) == pytest.approx(kl, rel=1e-12)
    assert float(distill.loss(p, p)) == pytest.approx(0.0, abs=1e-12)
    labels = torch.tensor([0, 2, 1, 1, 0])
    nll = float(-q.log()[torch.arange(5), labels].mean())
    classification = one_output_objective("classification", probs)
    assert float(classification.loss(q, labels)) == pytest.approx(nll, rel=1e-12)
    # retrained toward the original's outputs (--distill-temperature): KL on the probabilities
    toward = toward_original_outputs(classification, temperature=4.0)
    assert float(toward.loss(q, p)) == pytest.approx(kl, rel=1e-12)
    # logits keep the objective they always had
    assert one_output_objective("distill", OutputKind("y", (1, 3), "logits")) is DISTILL_CLASSIFIER


def test_joined_outputs_are_split_back_and_weighted():
    """The loss of a model of several outputs is the weighted sum of each output's loss on
    its part of the joined tensor; the selection metric is the worst output's relative
    error, an output of weight 0 left out."""
    rng = np.random.default_rng(1)
    kinds = [
        OutputKind("score", (1, 2, 3, 3), "probs", weight=2.0),
        OutputKind("box", (1, 4, 3, 3), "values", weight=0.5),
        OutputKind("unused", (1, 2), "values", weight=0.0),
    ]
    parts = [torch.from_numpy(rng.normal(size=(6, *k.shape[1:]))) for k in kinds]
    parts[0] = torch.softmax(parts[0], 1)
    targets = [p + 0.1 * torch.from_numpy(rng.normal(size=p.shape)) for p in parts]
    targets[0] = torch.softmax(targets[0], 1)
    mean_squares = [float((t**2).mean()) for t in targets]
    objective = distill_outputs(kinds, mean_squares)

    def joined(tensors):
        return torch.cat([t.reshape(6, -1) for t in tensors], 1)

    expected = sum(
        k.weight * output_loss(k, m)(p, t)
        for k, m, p, t in zip(kinds, mean_squares, parts, targets)
    )
    assert float(objective.loss(joined(parts), joined(targets))) == pytest.approx(float(expected))
    box_mse = F.mse_loss(parts[1], targets[1]) / mean_squares[1]
    assert float(output_loss(kinds[1], mean_squares[1])(parts[1], targets[1])) == float(box_mse)
    y, original = joined(parts).numpy(), joined(targets).numpy()
    errors = [relative_error(p.numpy(), t.numpy()) for p, t in zip(parts, targets)]
    assert objective.metric(y, original) == max(errors[:2])
    assert objective.extra_metrics["box.relative_error"](y, original) == errors[1]
    assert sorted(objective.extra_metrics) == [
        "box.relative_error",
        "score.relative_error",
        "score.top1_agreement",
        "unused.relative_error",
    ]


def test_two_detectors_of_three_outputs_pack_label_free():
    """Two detector stages share a pool smaller than either; each output is reported, the
    selection metric is the worst of them, and retraining keeps only validation gains."""
    tasks = [_detector_task(0, "det_a"), _detector_task(1, "det_b")]
    x = np.random.default_rng(2).normal(size=(200, 3, 12, 12)).astype(np.float32)
    data = {t.name: wv.TaskData(x, outputs={"box": "values"}) for t in tasks}
    config = wv.PackConfig(
        page_size=50,
        pool_pages=6,
        share_within_task=True,
        optimize=wv.OptimizeConfig(rounds=1, iterations=20, eval_every=5),
    )
    report = wv.pack(tasks, data, config).report
    for name in ("det_a", "det_b"):
        row = report["tasks"][name]
        # the separate model against its own outputs: 0 up to torch's run-to-run rounding
        assert row["metric"] == "worst_relative_error" and row["separate"] < 1e-6
        extra = row["extra_metrics"]
        worst = max(v["packed"] for k, v in extra.items() if k.endswith("relative_error"))
        assert row["packed"] == worst
        assert extra["score.top1_agreement"]["separate"] == 100.0
        assert "output 'box' (given): values: MSE over its mean square" in row["data"]["notes"]
    assert report["pool_pages"] == 6
    for turn in report["optimize_log"]:
        assert turn["val_after"] <= turn["val_before"]
        assert turn["kept"] == (turn["val_after"] < turn["val_before"])


def test_the_cli_packs_a_detector_with_kinds_weights_and_a_learning_rate(tmp_path, capsys):
    from tvm_weightvirt.apps.cli import main

    model = tmp_path / "det.onnx"
    onnx.save(_detector_onnx(0), model)
    x = np.random.default_rng(3).normal(size=(60, 3, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "det.npz", x_train=x)
    out = str(tmp_path / "det.wvpack")
    argv = ["pack", f"det={model}", "--data", f"det={tmp_path / 'det.npz'}", "-o", out]
    argv += ["--output-kind", "det:box=values", "--output-weight", "det:objectness=0.5"]
    argv += ["--lr", "1e-4", "--rounds", "1", "--iterations", "5", "--page-size", "50"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "  output score: relative_error " in printed and "top1_agreement 100% -> " in printed
    assert "  output objectness: relative_error " in printed
    report = wv.load_wvpack(out).report
    assert report["optimize"]["lr"] == 1e-4
    notes = report["tasks"]["det"]["data"]["notes"]
    assert "output 'box' (given): values: MSE over its mean square" in notes
    assert main([*argv[:-6], "--output-kind", "det:boxes=values", "--force"]) == 2
    assert "no output named ['boxes'] (its outputs: score, box, objectness)" in (
        capsys.readouterr().err
    )


def test_a_manifest_names_output_kinds_and_weights(tmp_path):
    from tvm_weightvirt.apps.manifest import read_manifest

    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[tasks.det]\nmodel = "det.onnx"\noutputs = {box = "values"}\n'
        "output_weights = {landmarks = 1, score = 0.5}\n"
    )
    spec = read_manifest(str(manifest))
    assert spec.outputs == {"det": {"box": "values"}}
    assert spec.output_weights == {"det": {"landmarks": 1.0, "score": 0.5}}
    manifest.write_text('[tasks.det]\nmodel = "det.onnx"\noutput_weights = {score = "high"}\n')
    with pytest.raises(ValueError, match="tasks.det.output_weights must be a table of output"):
        read_manifest(str(manifest))


def test_the_fisher_of_a_softmax_output_is_nwvs_of_its_logits():
    """`predicted_probability` on probabilities is NWV's predicted-class Fisher of the logits
    before the softmax: one gradient a sample, not one a class."""
    from tvm_weightvirt.algorithms.importance import fisher_nwv

    torch.manual_seed(0)
    logits = torch.nn.Linear(6, 5)
    probs = torch.nn.Sequential(logits, torch.nn.Softmax(1))
    x = np.random.default_rng(4).normal(size=(30, 6)).astype(np.float32)
    of_logits = fisher_nwv(logits, x, n_samples=30)
    of_probs = fisher_nwv(probs, x, n_samples=30, likelihood="predicted_probability")
    for name, f in of_logits.items():
        np.testing.assert_allclose(of_probs[f"0.{name}"], f, rtol=1e-4, atol=1e-7)
    kind = OutputKind("p", (1, 5), "probs")
    assert one_output_objective("distill", kind).fisher == "predicted_probability"
