"""Exploring pool sizes: packs largest first, keeps the smallest that meets the target on
validation, stops at the first that misses it."""

import numpy as np
import pytest

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples

CONFIG = wv.PackConfig(optimize=wv.OptimizeConfig(rounds=1, iterations=10, eval_every=5))


def _models_and_inputs():
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        layers = [
            (rng.normal(0, 0.3, (20, 16)), np.zeros(16)),
            (rng.normal(0, 0.3, (16, 4)), np.zeros(4)),
        ]
        yield name, examples._onnx_mlp(layers, name), rng.normal(size=(120, 20)).astype(np.float32)


@pytest.fixture(scope="module")
def two_classifiers():
    tasks, data = [], {}
    for name, model, x in _models_and_inputs():
        tasks.append(wv.Task.from_onnx(model, name=name))
        data[name] = wv.TaskData(x)
    return tasks, data


def test_the_smallest_pool_before_the_first_miss_is_chosen(two_classifiers):
    tasks, data = two_classifiers
    fractions = [0.3, 1.0, 0.6]
    found = wv.explore_pool_sizes(tasks, data, fractions, CONFIG, min_agreement=90.0)
    assert [r["fraction"] for r in found.rows] == [1.0, 0.6, 0.3][: len(found.rows)]
    met = []
    for row in found.rows:
        for v in row["tasks"].values():  # distilled classifiers: top-1 agreement, a percentage
            assert v["metric"] == "top1_agreement" and v["met"] == (v["validation"] >= 90.0)
        met.append(all(v["met"] for v in row["tasks"].values()))
    assert met == sorted(met, reverse=True) and met.count(False) <= 1  # stops at a miss
    assert len(found.rows) == 3 or not met[-1]
    if found.chosen is None:
        assert not met[0]
    else:
        assert found.chosen.report["pool_pages"] == found.rows[met.count(True) - 1]["pool_pages"]
    assert "validation (target met)" in found.table()


def test_a_target_no_pool_meets_stops_after_the_largest(two_classifiers):
    tasks, data = two_classifiers
    found = wv.explore_pool_sizes(tasks, data, [1.0, 0.5], CONFIG, min_agreement=101.0)
    assert found.chosen is None and len(found.rows) == 1
    assert "MISS" in found.table()


def test_bad_explorations_are_refused(two_classifiers):
    tasks, data = two_classifiers
    with pytest.raises(ValueError, match="needs a target"):
        wv.explore_pool_sizes(tasks, data, [0.5], CONFIG)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        wv.explore_pool_sizes(tasks, data, [0.5, 1.5], CONFIG, max_error=0.1)
    with pytest.raises(ValueError, match="sets the pool size itself"):
        wv.explore_pool_sizes(tasks, data, [0.5], wv.PackConfig(pool_pages=3), max_error=0.1)
    with pytest.raises(ValueError, match="no task has a metric the target applies to"):
        wv.explore_pool_sizes(tasks, data, [0.5], CONFIG, max_error=0.1)  # agreements only


def test_the_cli_writes_the_chosen_pack_with_its_table(tmp_path, capsys):
    import onnx

    from tvm_weightvirt.apps.cli import main

    models, data = [], []
    for name, model, x in _models_and_inputs():
        onnx.save(model, tmp_path / f"{name}.onnx")
        np.savez(tmp_path / f"{name}.npz", x_train=x)
        models.append(f"{name}={tmp_path / name}.onnx")
        data += ["--data", f"{name}={tmp_path / name}.npz"]
    argv = ["pack", *models, *data]
    out = tmp_path / "chosen.wvpack"
    argv += ["--explore", "1.0", "--min-agreement", "0", "--rounds", "0", "-o", str(out)]
    assert main(argv) == 0
    assert "validation (target met)" in capsys.readouterr().out
    report = wv.load_wvpack(out).report
    pages = sum(r["pages"] for r in report["tasks"].values())
    assert [r["pool_pages"] for r in report["explore"]] == [report["pool_pages"]] == [pages]
