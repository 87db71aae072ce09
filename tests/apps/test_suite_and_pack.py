"""The suite's splits; packing two real tasks end to end; `wvirt pack` on a mini configuration;
compiled accuracy equals torch accuracy of the same weights; bad input."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from packed_accuracy import assert_runtime_reproduces_the_report
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.apps import suite
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.frontend.packing import pack

MINI = ["wine", "iris"]  # trains in seconds


@pytest.mark.parametrize("name", suite.FIVE_TASKS)
def test_splits_are_disjoint_and_deterministic(name):
    first, second = suite.load_splits(name), suite.load_splits(name)
    rows = {}
    for split in ["train", "val", "test"]:
        np.testing.assert_array_equal(first[split].x, second[split].x)
        np.testing.assert_array_equal(first[split].y, second[split].y)
        rows[split] = {hashlib.sha1(r.tobytes()).hexdigest() for r in first[split].x}
        assert len(first[split].y) > 0
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


@pytest.mark.skipif("WVIRT_MNIST_TEST" in os.environ, reason="the path is set by the environment")
def test_the_real_mnist_test_set_is_looked_for_beside_the_checkout():
    beside = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-test"
    assert Path(suite.MNIST_TEST).resolve() == beside.resolve()  # ../shared may be a symlink


def test_suite_models_have_the_intended_sizes():
    sizes = {
        n: sum(p.numel() for p in suite.SPECS[n].make_model().parameters()) for n in suite.TEN_TASKS
    }
    assert sizes["mnist"] == 45_706  # NWV's MNIST net: conv 1-8-16-32, FC 32-128-256-10
    assert all(20_000 <= s <= 75_000 for s in sizes.values()), sizes


@pytest.fixture(scope="module")
def mini_tasks():
    return suite.load_suite(MINI)


@pytest.fixture(scope="module")
def packed(mini_tasks):
    config = PackConfig(optimize=OptimizeConfig(rounds=2, iterations=100, eval_every=25))
    return pack(*suite.packable(mini_tasks), config)


@pytest.mark.slow
def test_packing_two_tasks_shares_pages_and_keeps_accuracy(mini_tasks, packed):
    """Bytes and pages are exact (layouts); accuracy is what retraining guarantees: a turn
    keeps a state only when it raises the task's validation accuracy, and test accuracy stays
    within a stated margin (8 pp: 3 of wine's 36 test samples) of the separate models."""
    plan, report = packed.plan, packed.report
    assert plan.n_pool_pages == 268  # NWV's setting: pages of the largest task (wine, 26,755)
    assert report["ratio_count"] == pytest.approx((26_755 + 25_603) / (268 * 100))
    assert report["bytes_packed"] == 268 * 100 * 4 + (268 + 257) * 2  # pool + uint16 tables
    for name, r in report["tasks"].items():
        assert r["packed"] >= r["separate"] - 8.0, (name, r)
    log = report["optimize_log"]
    assert [(t["round"], t["task"]) for t in log] == [(r, n) for r in range(2) for n in MINI]
    for turn in log:
        assert turn["val_after"] >= turn["val_before"], turn
        assert turn["kept"] == (turn["val_after"] > turn["val_before"]), turn
    # the plan holds what the last turn kept: its task's validation accuracy, read back
    last = next(t for t in mini_tasks if t.name == log[-1]["task"])
    assert last.accuracy("val", last.model_from_plan(plan)) == log[-1]["val_after"]


@pytest.mark.slow
def test_compiled_accuracy_equals_torch_accuracy_of_the_same_weights(mini_tasks, packed):
    plan = packed.plan
    graphs = [t.task for t in mini_tasks]
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan, mode="fused")))
    assert_runtime_reproduces_the_report(runtime, mini_tasks, plan, packed.report)


@pytest.mark.slow
def test_smartdeal_pages_pack_to_codes_and_compile_to_the_same_accuracy(mini_tasks):
    """Composition: the pool is stored as power-of-two codes + a basis per page (132 B per page
    of 96 instead of 384 B); trained jointly; the compiled switch kernel decodes exactly the
    weights torch was evaluated with."""
    from tvm_weightvirt.coded_pages import decode_codes

    config = PackConfig(
        page_size=96,
        pool_pages=140,  # about half of wine's pages
        share_within_task=True,
        smartdeal=True,
        optimize=OptimizeConfig(rounds=1, iterations=100, eval_every=25),
    )
    packed = pack(*suite.packable(mini_tasks), config)
    plan, report = packed.plan, packed.report
    c = decode_codes(plan.coded.codes)
    assert np.allclose(2.0 ** np.round(np.log2(np.abs(c[c != 0]))), np.abs(c[c != 0]))
    tables = 2 * sum(len(t.page_table) for t in plan.tasks.values())  # uint16
    page_bytes = plan.coded.format.row_bytes(96) + 18  # packed codes, a float16 3x3 basis
    assert report["bytes_packed"] == 140 * page_bytes + tables
    assert report["smartdeal"]["stored_bytes"] == report["bytes_packed"]
    separate = 4 * (26_755 + 25_603)
    assert report["ratio_bytes"] == pytest.approx(separate / (140 * page_bytes + tables))
    for name, r in report["tasks"].items():
        assert r["packed"] >= r["separate"] - 10.0, (name, r)
    graphs = [t.task for t in mini_tasks]
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    assert_runtime_reproduces_the_report(runtime, mini_tasks, plan, report)


@pytest.mark.slow
def test_wvirt_pack_smartdeal_writes_a_coded_pool(tmp_path, capsys):
    out = tmp_path / "coded.wvpack"
    args = ["pack", "--suite", ",".join(MINI), "--smartdeal", "--page-size", "96"]
    args += ["--pool-pages", "140", "--share-within-task", "--rounds", "0", "-o", str(out)]
    assert main(args) == 0
    pack = wv.load_wvpack(out)
    page_bytes = pack.plan.coded.format.row_bytes(96) + 18  # packed codes, a float16 3x3 basis
    assert pack.plan.coded.codes.shape == (140, 96) and pack.plan.pool_bytes == 140 * page_bytes
    assert main(["inspect", str(out)]) == 0
    assert f"pool {140 * page_bytes} B" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["pack", "--help"])
    assert "a multiple of 3" in capsys.readouterr().out
    assert main([*args[:5], "100", *args[6:]]) == 2  # page size 100
    assert "must be a multiple of 3, got 100" in capsys.readouterr().err


@pytest.mark.slow
def test_wvirt_pack_mini_configuration(mini_wvpack, tmp_path, capsys):
    pack_mini = ["pack", "--suite", ",".join(MINI), "--rounds", "1", "--iterations", "50"]
    assert main(["inspect", str(mini_wvpack), "--png", str(tmp_path / "report.png")]) == 0
    printed = capsys.readouterr().out
    assert "wine" in printed and "1.93x bytes" in printed  # (26755 + 25603) x 4 / 108250 B
    pack = wv.load_wvpack(mini_wvpack)
    assert [t.name for t in pack.tasks] == MINI and pack.report["pool_pages"] == 268
    assert (tmp_path / "report.png").stat().st_size > 10_000
    # resume: one more round from the saved plan, same tables
    again = tmp_path / "again.wvpack"
    assert main([*pack_mini, "--resume", str(mini_wvpack), "-o", str(again)]) == 0
    resumed = wv.load_wvpack(again).plan
    for name in MINI:
        np.testing.assert_array_equal(
            resumed.task(name).page_table, pack.plan.task(name).page_table
        )


@pytest.mark.slow
def test_bad_input(mini_tasks):
    tasks, data = suite.packable(mini_tasks)
    with pytest.raises(ValueError, match="no tasks to pack"):
        pack([], {})
    with pytest.raises(
        ValueError,
        match=r"a pool of 100 pages cannot hold task 'wine' \(268 pages to share\): the minimum is 268",
    ):
        pack(tasks, data, PackConfig(pool_pages=100))
    wrong = wv.TaskData(np.zeros((80, 7), np.float32), source="wrong.npz")
    with pytest.raises(
        ValueError,
        match=r"task 'wine' \(wrong.npz\): x_train has samples of shape \(7,\), the model input is \(1, 13\)",
    ):
        pack(tasks[:1], {"wine": wrong})
    with pytest.raises(ValueError, match="no suite task 'nope'"):
        suite.load_task("nope")
