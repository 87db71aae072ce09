"""`wv.pack` on a user's own models and data: an ONNX classifier, an unlabelled ONNX model
(distilled) and a torch regression model, none from the suite; the CLI with npz files and
with a manifest; every kind of bad input, refused before any work with nothing written."""

import os
import re

import numpy as np
import onnx
import pytest
import torch
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.frontend.twin import TorchTwin
from tvm_weightvirt.plan import layout_of

NAMES = ["sensors", "gestures", "friedman"]


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    return examples.write_user_models(str(tmp_path_factory.mktemp("user")))


def _tasks(files) -> list:
    return [
        wv.Task.from_onnx(files["sensors"]["model"], name="sensors"),
        wv.Task.from_onnx(files["gestures"]["model"], name="gestures"),
        wv.Task.from_pt2(files["friedman"]["model"], name="friedman"),
    ]


@pytest.fixture(scope="module")
def packed(user_files):
    tasks = _tasks(user_files)
    data = {n: wv.TaskData.from_npz(user_files[n]["data"]) for n in NAMES}
    data["friedman"].objective = "regression"
    config = wv.PackConfig(pool_pages=130, optimize=wv.OptimizeConfig(rounds=4, iterations=300))
    return tasks, wv.pack(tasks, data, config)


@pytest.mark.slow
def test_users_models_share_a_pool_smaller_than_their_sum_and_keep_their_metrics(packed):
    tasks, result = packed
    plan, report = result.plan, result.report
    # 5,764 + 5,443 + 4,929 weights on 58 + 55 + 50 = 163 pages of 100 > a pool of 130 pages
    assert [plan.task(t.name).layout.n_pages for t in tasks] == [58, 55, 50]
    assert plan.n_pool_pages == 130 and plan.pool_bytes == 130 * 100 * 4
    r = report["tasks"]
    assert (r["sensors"]["objective"], r["sensors"]["metric"]) == ("classification", "accuracy")
    assert (r["gestures"]["objective"], r["gestures"]["metric"]) == ("distill", "top1_agreement")
    assert (r["friedman"]["objective"], r["friedman"]["metric"]) == ("regression", "rmse")
    assert r["sensors"]["packed"] >= r["sensors"]["separate"] - 2.0
    assert r["gestures"]["separate"] == 100.0 and r["gestures"]["packed"] >= 95.0
    assert r["friedman"]["packed"] <= 1.10 * r["friedman"]["separate"]
    assert set(r["friedman"]["extra_metrics"]) == {"r2"}
    # the unlabelled task's val and test splits were carved out of its training samples
    assert r["gestures"]["data"]["samples"] == {"train": 960, "val": 300, "test": 240}
    assert r["gestures"]["data"]["notes"] == [
        "val: 300 samples held out of train (20%, seed 0)",
        "test: 240 samples held out of train (20%, seed 0)",
        "output 'y' (its shape [N, C]): logits: KL of softmaxes along axis 1",
    ]


@pytest.mark.slow
def test_compiled_outputs_equal_the_twins_on_the_packed_weights(packed, user_files):
    tasks, result = packed
    runtime = MultitaskRuntime(result.plan, wv.build(wv.lower(tasks, result.plan)))
    for t in tasks + tasks[::-1]:
        x = np.load(user_files[t.name]["data"])["x_train"][:1].astype(np.float32)
        weights = {k: torch.from_numpy(v) for k, v in result.plan.read(t.name).items()}
        with torch.no_grad():
            expected = torch.func.functional_call(TorchTwin(t), weights, (torch.from_numpy(x),))
        np.testing.assert_allclose(
            runtime.run(t.name, x)[0], expected.numpy(), atol=1e-5, rtol=1e-5
        )


def _cli_pack(files, out, extra=()) -> list[str]:
    models = [f"{n}={files[n]['model']}" for n in NAMES]
    data = [a for n in NAMES for a in ("--data", f"{n}={files[n]['data']}")]
    objectives = ["--objective", "gestures=distill", "--objective", "friedman=regression"]
    return [
        "pack",
        *models,
        *data,
        *objectives,
        "--pool-pages",
        "130",
        "--rounds",
        "1",
        "--iterations",
        "40",
        *extra,
        "-o",
        str(out),
    ]


@pytest.mark.slow
def test_cli_with_npz_files_and_with_a_manifest_give_the_same_plan(user_files, tmp_path, capsys):
    by_flags, by_manifest = tmp_path / "flags.wvpack", tmp_path / "manifest.wvpack"
    assert main(_cli_pack(user_files, by_flags)) == 0
    printed = capsys.readouterr().out
    assert "top1_agreement" in printed and "rmse" in printed and "accuracy" in printed
    manifest = os.path.join(os.path.dirname(user_files["sensors"]["model"]), "suite.toml")
    flags = ["--rounds", "1", "--iterations", "40"]  # the command line wins over [pack]
    assert main(["pack", manifest, *flags, "-o", str(by_manifest)]) == 0
    first, second = wv.load_wvpack(by_flags), wv.load_wvpack(by_manifest)
    np.testing.assert_array_equal(first.plan.pool, second.plan.pool)
    for name in NAMES:
        np.testing.assert_array_equal(
            first.plan.task(name).page_table, second.plan.task(name).page_table
        )
    assert first.report["tasks"] == second.report["tasks"]
    assert main(["inspect", str(by_flags), "--png", str(tmp_path / "report.png")]) == 0
    assert "friedman" in capsys.readouterr().out
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_two_processes_on_loopback_give_the_one_process_plan(user_files, tmp_path):
    """`--nproc 2` (torchrun, gloo on loopback) splits every mini-batch between the processes
    and averages the pool's gradient: the same plan as one process up to float reduction
    order. Page tables (matching) are equal exactly; each pool weight within 1e-4 of the
    pool's largest, after 2 x 30 Adam steps of lr 1e-3 (a step moves a weight by <= ~1e-3;
    rounding-level gradient differences move it by far less)."""
    manifest = os.path.join(os.path.dirname(user_files["sensors"]["model"]), "suite.toml")
    flags = ["--rounds", "1", "--iterations", "30"]
    one, two = tmp_path / "one.wvpack", tmp_path / "two.wvpack"
    assert main(["pack", manifest, *flags, "-o", str(one)]) == 0
    assert main(["pack", manifest, *flags, "--nproc", "2", "-o", str(two)]) == 0
    first, second = wv.load_wvpack(one).plan, wv.load_wvpack(two).plan
    for name in NAMES:
        np.testing.assert_array_equal(first.task(name).page_table, second.task(name).page_table)
    assert np.abs(first.pool - second.pool).max() <= 1e-4 * np.abs(first.pool).max()


# **** bad input: each a clear error naming task, file and field; nothing written ****


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """An untrained ONNX MLP (20 -> 4 classes) and good data for it, in files."""
    folder = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    layers = [
        (rng.normal(0, 0.3, (20, 16)), np.zeros(16)),
        (rng.normal(0, 0.3, (16, 4)), np.zeros(4)),
    ]
    model = folder / "m.onnx"
    onnx.save(examples._onnx_mlp(layers, "m"), model)
    x, y = rng.normal(size=(200, 20)).astype(np.float32), rng.integers(0, 4, 200)
    return folder, str(model), x, y


def _npz(folder, name, **arrays) -> str:
    path = str(folder / f"{name}.npz")
    np.savez(path, **arrays)
    return path


def _refused(argv, out, capsys, *expected) -> None:
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert not out.exists()


def test_bad_data_is_refused_before_any_work(small, tmp_path, capsys):
    folder, model, x, y = small
    out = tmp_path / "never.wvpack"
    cases = [
        (
            dict(x_train=x[:, :7], y_train=y),
            ["task 'm'", "x_train has samples of shape (7,)", "(1, 20)"],
        ),
        (
            dict(x_train=x, y_train=y + 2),
            ["task 'm'", "y_train spans [2, 5], the model has 4 classes"],
        ),
        (dict(x_train=x, y_train=y + 0.5), ["task 'm'", "y_train must hold integer class ids"]),
        (
            dict(x_train=np.where(np.arange(20) == 3, np.nan, x)),
            ["task 'm'", "x holds NaN or inf in 200 samples"],
        ),
        (
            dict(
                x_train=x[:5], y_train=y[:5], x_val=x[:5], y_val=y[:5], x_test=x[:5], y_test=y[:5]
            ),
            ["5 training samples, the Fisher needs at least 10"],
        ),
        (dict(x_train=x, labels=y), ["unknown keys ['labels']", "x_train, y_train, x_val"]),
        (dict(x_train=x.astype(np.int64)), ["x_train is int64, the model takes float32"]),
    ]
    for i, (arrays, expected) in enumerate(cases):
        path = _npz(folder, f"bad{i}", **arrays)
        _refused(["pack", f"m={model}", "--data", f"m={path}"], out, capsys, path, *expected)


def test_bad_names_models_and_manifests_are_refused(small, tmp_path, capsys):
    folder, model, x, y = small
    out = tmp_path / "never.wvpack"
    good = _npz(folder, "good", x_train=x, y_train=y)
    _refused(
        ["pack", f"m={model}", "--data", f"other={good}"],
        out,
        capsys,
        "--data for ['other'], which are not models",
    )
    _refused(
        ["pack", f"m={model}", f"n={model}", "--data", f"m={good}"],
        out,
        capsys,
        "tasks ['n'] have no data",
        "give data for each task, or ask for a lossless plan",
    )
    _refused(["pack", f"m={model}"], out, capsys, "tasks ['m'] have no data")
    _refused(
        ["pack", f"m={model}", "--data", f"m={good}", "--objective", "m=clustering"],
        out,
        capsys,
        "unknown objective 'clustering'",
    )
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"not a torch.export archive")
    _refused(
        ["pack", f"b={broken}", "--data", f"b={good}"],
        out,
        capsys,
        "task 'b'",
        "broken.pt2' is not a readable torch.export program",
    )
    manifest = tmp_path / "suite.toml"
    manifest.write_text(f'[tasks.m]\nmodel = "{model}"\ndata = "{good}"\nlabels = "y"\n')
    _refused(
        ["pack", str(manifest)],
        out,
        capsys,
        "tasks.m: unknown keys ['labels'] (valid: model, data, objective, outputs, output_weights)",
    )
    manifest.write_text(f'[tasks.m]\nmodel = "{model}"\n[pack]\npool = 3\n')
    _refused(
        ["pack", str(manifest)],
        out,
        capsys,
        "[pack]: unknown keys ['pool'] (valid: page_size, pool_pages",
    )
    manifest.write_text(
        f'[tasks.m]\nmodel = "{model}"\ndata = "{good}"\n[pack]\npool_pages = "many"\n'
    )
    _refused(["pack", str(manifest)], out, capsys, "[pack] pool_pages = 'many', expected int")


def test_every_missing_twin_op_of_every_task_in_one_error(small, tmp_path):
    """An op the twin cannot train is named per task, once, before any work."""
    from onnx import TensorProto, helper

    _, _, x, y = small
    graph = helper.make_graph(
        [
            helper.make_node("CumSum", ["x", "axis"], ["e"]),
            helper.make_node("Gemm", ["e", "w", "b"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [
            onnx.numpy_helper.from_array(np.ones((20, 4), np.float32), "w"),
            onnx.numpy_helper.from_array(np.zeros(4, np.float32), "b"),
            onnx.numpy_helper.from_array(np.array(1, np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tasks = [wv.Task.from_onnx(model, name="a"), wv.Task.from_onnx(model, name="b")]
    data = wv.TaskData((x, y))
    with pytest.raises(wv.IntakeError, match=r"task 'a': relax.cumsum; task 'b': relax.cumsum"):
        wv.pack(tasks, {"a": data, "b": data})


def test_shared_pages_matrix_counts_pool_pages_read_by_both_tasks():
    from tvm_weightvirt.apps.figures import shared_pages

    layout = wv.PageLayout.from_weights({"w": ((4, 10), "float32")}, 10, "a")  # 4 pages
    pool = np.zeros((3, 10), np.float32)
    plan = wv.PagePlan(
        10,
        pool,
        {  # a: 2 exclusive pages (3, 4); b has more pages than the pool: page 2 twice, counted once
            "a": wv.TaskPages(layout, np.array([0, 1, 3, 4]), np.zeros((2, 10), np.float32)),
            "b": wv.TaskPages(layout, np.array([1, 2, 2, 0])),
        },
    )
    names, matrix = shared_pages(plan)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(matrix, [[2, 2], [2, 3]])


def test_reports_saved_before_objectives_still_read():
    """A pack written by an earlier version (accuracy only, `acc_*` keys) still prints."""
    from tvm_weightvirt.algorithms.report import format_report

    row = {"params": 100, "pages": 1, "exclusive_pages": 0, "acc_separate": 90.0}
    row |= {"acc_matched": 80.0, "acc_packed": 89.0, "delta_pp": -1.0, "matching_cost": 0.1}
    report = {
        "tasks": {"old": row},
        "pool_pages": 1,
        "page_size": 100,
        "bytes_separate": 400,
        "bytes_packed": 404,
        "l1_bytes": 404,
        "l2_bytes": 0,
        "ratio_bytes": 0.99,
        "ratio_count": 1.0,
        "mean_delta_pp": -1.0,
        "worst_delta_pp": -1.0,
    }
    table = format_report(report)
    assert "classification accuracy" in table and "89%" in table and "-1" in table


def test_the_report_says_when_no_task_reads_the_pool():
    """A level-2 budget that holds every page leaves the pool unread: the report says so."""
    from tvm_weightvirt.algorithms.report import format_report

    row = {"params": 200, "pages": 2, "exclusive_pages": 2, "objective": "regression"}
    row |= {"metric": "rmse", "percent": False, "separate": 1.0, "matched": 2.0}
    row |= {"packed": 1.0, "delta": 0.0}
    report = {"tasks": {"a": row}, "pool_pages": 1, "page_size": 100, "bytes_separate": 800}
    report |= {"bytes_packed": 1204, "l1_bytes": 404, "l2_bytes": 800, "ratio_bytes": 0.66}
    report |= {"ratio_count": 0.67, "mean_delta_pp": None}
    unread = "every page is exclusive: no task reads the pool"
    assert unread in format_report(report)
    report["tasks"]["a"]["exclusive_pages"] = 1
    assert unread not in format_report(report)


def test_a_model_with_two_outputs_distills_both_and_separation_takes_ws_lambda(small):
    from onnx import TensorProto, helper

    folder, model, x, y = small
    two = onnx.load(model)
    two.graph.node.append(helper.make_node("Relu", ["y"], ["z"]))
    two.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4]))
    task = wv.Task.from_onnx(two, name="two")
    with pytest.raises(ValueError, match="task 'two' \\(arrays\\): the model has 2 outputs"):
        wv.pack([task], {"two": wv.TaskData((x, y), objective="classification")})
    no_sharing = wv.PackConfig(optimize=wv.OptimizeConfig(rounds=0))
    row = wv.pack([task], {"two": wv.TaskData((x, y))}, no_sharing).report["tasks"]["two"]
    assert row["metric"] == "worst_relative_error"
    assert sorted(row["extra_metrics"]) == ["y.relative_error", "z.relative_error"]
    assert "labels unused: a model of 2 outputs packs by distillation" in row["data"]["notes"]
    separation = wv.SeparationConfig(l1_budget_bytes=4096)
    config = wv.PackConfig(separation=separation, optimize=wv.OptimizeConfig(rounds=0))
    m = wv.Task.from_onnx(model, name="m")
    report = wv.pack([m], {"m": wv.TaskData((x, y))}, config).report
    assert report["optimize"]["lam"] == 0.1  # WS's, as the CLI gives (NWV's 10 without)


def test_a_pool_size_over_the_level1_budget_is_refused_naming_what_fits(small):
    """Given both, the pool size must fit the level-1 budget beside the page tables."""
    _, model, x, y = small
    m, data = wv.Task.from_onnx(model, name="m"), {"m": wv.TaskData((x, y))}

    def config(pool_pages):
        separation = wv.SeparationConfig(l1_budget_bytes=4096)
        return wv.PackConfig(
            pool_pages=pool_pages, separation=separation, optimize=wv.OptimizeConfig(rounds=0)
        )

    with pytest.raises(ValueError, match="over its budget of 4096 B: at most") as refused:
        wv.pack([m], data, config(50))  # 50 pages of 400 B: 20,000 B
    fits = int(re.search(r"at most (\d+) pool pages fit", str(refused.value))[1])
    assert fits == (4096 - 2 * layout_of(m, 100).n_pages) // 400  # uint16 tables
    assert wv.pack([m], data, config(fits)).report["l1_bytes"] <= 4096
    with pytest.raises(ValueError, match=f"a pool of {fits + 1} pages needs"):
        wv.pack([m], data, config(fits + 1))


def test_own_objective_datasets_and_the_same_pack_twice(small):
    """A user's loss and metric, splits as torch Datasets, and determinism: two packs of the
    same inputs are bit-identical."""
    _, model, x, y = small
    task = wv.Task.from_onnx(model, name="m")
    margin = wv.Objective(
        "margin",
        loss=lambda out, t: torch.nn.functional.multi_margin_loss(out, t),
        metric=lambda out, t: float((out.argmax(1) == t).mean()),
        metric_name="hit_rate",
    )
    tensors = [torch.from_numpy(x[:160]), torch.from_numpy(y[:160])]
    data = wv.TaskData(
        torch.utils.data.TensorDataset(*tensors),
        val=(x[160:], y[160:]),
        test=(x[160:], y[160:]),
        objective=margin,
    )
    config = wv.PackConfig(optimize=wv.OptimizeConfig(rounds=1, iterations=20, eval_every=5))
    first = wv.pack([task], {"m": data}, config)
    second = wv.pack([task], {"m": data}, config)
    row = first.report["tasks"]["m"]
    assert (row["objective"], row["metric"]) == ("margin", "hit_rate")
    assert row["data"]["samples"] == {"train": 160, "val": 40, "test": 40}
    np.testing.assert_array_equal(first.plan.pool, second.plan.pool)
    assert first.report["optimize_log"] == second.report["optimize_log"]
