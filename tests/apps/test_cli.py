"""The CLI as a user meets it: every flag takes effect or is refused, no traceback for a user's
mistake, outputs written whole or not at all and never over an input."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import tvm
from tvm_weightvirt.runtime import StandaloneModel
from tvm_weightvirt.runtime.page_mapping import OS_PAGE_BYTES as OS_PAGE

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.targets import mcu


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two small ONNX models, samples of their inputs (`<name>_data`; `const_data`: all equal),
    their lossless pack, and a folder to write into."""
    folder = tmp_path_factory.mktemp("cli")
    paths = {}
    rng = np.random.default_rng(0)
    for name, make in [("res", examples.onnx_resnet_block), ("inc", examples.onnx_inception_block)]:
        paths[name] = str(folder / f"{name}.onnx")
        model, x = make()
        onnx.save(model, paths[name])
        paths[f"{name}_data"] = str(folder / f"{name}.npz")
        np.savez(paths[f"{name}_data"], x_train=rng.normal(size=(32, *x.shape[1:])).astype("f4"))
        if name == "res":
            paths["const_data"] = str(folder / "const.npz")
            np.savez(paths["const_data"], x_train=np.ones((8, *x.shape[1:]), "f4"))
    paths["pack"] = str(folder / "suite.wvpack")
    assert (
        main(
            [
                "pack",
                f"res={paths['res']}",
                f"inc={paths['inc']}",
                "--lossless",
                "-o",
                paths["pack"],
            ]
        )
        == 0
    )
    return folder, paths


def _bad_onnx(folder) -> str:
    model, _ = examples.onnx_inception_block()
    weight = next(i for i in model.graph.initializer if i.name == "b1.weight")
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0, 0, 0, 0] = np.nan
    weight.CopyFrom(onnx.numpy_helper.from_array(values, "b1.weight"))
    path = str(folder / "nan.onnx")
    onnx.save(model, path)
    return path


# argv (with {res}, {inc}, {pack}, {dir} filled in) -> words the one-line error must hold
REFUSED = [
    (
        ["pack", "res={res}", "--pool-pages", "45", "-o", "{dir}/a.wvpack"],
        ["tasks ['res'] have no data", "--lossless"],
    ),
    (
        ["pack", "res={res}", "--lossless", "--rounds", "2", "-o", "{dir}/a.wvpack"],
        ["shares nothing and trains nothing", "--rounds"],
    ),
    (["pack", "res={res}", "--lossless", "-o", "{res}"], ["is one of the inputs"]),
    (
        [
            "pack",
            "--suite",
            "wine,iris",
            "--l1-budget",
            "48KiB",
            "--refine-rounds",
            "1",
            "-o",
            "{dir}/a.wvpack",
        ],
        ["--refine-rounds refines the choice of --separation-rule bytes or bytes_even"],
    ),
    (
        [
            "pack",
            "--suite",
            "wine,iris",
            "--separation-rule",
            "bytes_even",
            "--l2-budget",
            "8KiB",
            "--refine-by",
            "whole_task",
            "-o",
            "{dir}/a.wvpack",
        ],
        ["--refine-by says how --refine-rounds moves", "give --refine-rounds"],
    ),
    (["pack", "res={res}", "--lossless", "-o", "{dir}/nowhere/a.wvpack"], ["does not exist"]),
    (
        ["pack", "res={res}", "--lossless", "-o", "{dir}/notes.txt"],
        ["exists and is not a .wvpack", "--force"],
    ),
    (["pack", "res={res}", "--lossless", "-o", "{dir}"], ["is a folder"]),
    (
        ["pack", "res={res}", "--rounds", "-1", "-o", "{dir}/a.wvpack"],
        ["--rounds -1: must be at least 0"],
    ),
    (
        ["pack", "res={res}", "--iterations", "0", "-o", "{dir}/a.wvpack"],
        ["--iterations 0: must be at least 1"],
    ),
    (
        ["pack", "res={dir}", "--lossless", "-o", "{dir}/a.wvpack"],
        ["is a folder, not a model file"],
    ),
    (
        ["pack", "nan={nan}", "--lossless", "-o", "{dir}/a.wvpack"],
        ["task 'nan': weights ['b1.weight'] hold NaN or inf"],
    ),
    (
        ["pack", "res={res}", "--input-shape", "res=1xA", "--lossless", "-o", "{dir}/a.wvpack"],
        ["dimensions must be integers"],
    ),
    (
        ["pack", "res={res}", "--input-shape", "img=1x3", "--lossless", "-o", "{dir}/a.wvpack"],
        ["NAME one of the ONNX models ['res'] or its input's name"],
    ),
    (
        ["pack", "res={res}", "--explore", "0.5", "-o", "{dir}/a.wvpack"],
        ["--explore keeps the smallest pool that meets a target"],
    ),
    (
        ["pack", "res={res}", "--explore", "0,2", "--max-error", "0.1", "-o", "{dir}/a.wvpack"],
        ["--explore '0,2': expected fractions of the pages in (0, 1]"],
    ),
    (
        ["pack", "res={res}", "--min-agreement", "99", "-o", "{dir}/a.wvpack"],
        ["--min-agreement are targets of --explore"],
    ),
    (
        ["pack", "res={res}", "--explore", "0.5", "--max-error", "0.1", "--pool-pages", "3"]
        + ["-o", "{dir}/a.wvpack"],
        ["--explore sets the pool size: drop ['--pool-pages']"],
    ),
    (
        ["pack", "res={res}", "--output-kind", "res=probs", "-o", "{dir}/a.wvpack"],
        ["--output-kind 'res=probs': expected NAME:OUTPUT=VALUE"],
    ),
    (
        ["pack", "res={res}", "--output-weight", "res:y=heavy", "-o", "{dir}/a.wvpack"],
        ["'heavy' is not a number"],
    ),
    (
        [
            "pack",
            "res={res}",
            "--output-kind",
            "res:y=values",
            "--lossless",
            "-o",
            "{dir}/a.wvpack",
        ],
        ["drop ['--output-kind']"],
    ),
    (
        ["build", "{pack}", "--arch", "sm_87", "-o", "{dir}/b"],
        ["--arch cannot apply to --target llvm"],
    ),
    (
        ["build", "{pack}", "--target", "cortex-m4", "--mode", "fused", "-o", "{dir}/b"],
        ["--mode cannot apply to --target cortex-m4"],
    ),
    (
        ["build", "{pack}", "--zero-copy", "flash", "-o", "{dir}/b"],
        ["--zero-copy cannot apply to --target llvm"],
    ),
    (
        ["build", "{pack}", "--target", "cortex-m4", "--zero-copy", "ram", "-o", "{dir}/b"],
        ["does not start on a page of 100", "--page-aligned"],
    ),
    (
        ["build", "{pack}", "--tune", "-2", "-o", "{dir}/b"],
        ["--tune -2: trials must be at least 0"],
    ),
    (["build", "{pack}", "--no-tuning-db", "--tune", "2", "-o", "{dir}/b"], ["--tune cannot"]),
    (["tune", "{pack}", "--trials", "0"], ["--trials 0: tuning measures at least 1 candidate"]),
    (["tune", "{pack}", "--arch", "sm_87"], ["--arch cannot apply to --target llvm"]),
    (["tune", "{dir}"], ["is a folder (a `wvirt build` output?), not a .wvpack"]),
    (["build", "{pack}", "-o", "{pack}"], ["is a file: -o takes a folder"]),
    (["build", "{pack}", "-o", "{dir}/foreign"], ["not a `wvirt build` folder: --force"]),
    (["build", "{dir}", "-o", "{dir}/b"], ["is a folder (a `wvirt build` output?), not a .wvpack"]),
    (["run", "{pack}", "--tasks", ","], ["--tasks ','"]),
    (["run", "{pack}", "--tasks", "res", "--qemu"], ["--qemu cannot apply to a .wvpack"]),
    (
        ["run", "{pack}", "--tasks", "res", "--mapped"],
        ["--mapped: a page is 400 B, not a multiple of the OS page", f"{OS_PAGE // 4} weights"],
    ),
    (
        ["run", "{pack}", "--tasks", "res", "--max-wait", "3"],
        ["--max-wait applies to --policy group"],
    ),
    (["run", "{pack}", "--tasks", "res", "--inputs", "res={dir}/x.npy"], ["cannot read"]),
    (["inspect", "{pack}", "--png", "{pack}"], ["is one of the inputs"]),
    (
        ["build", "{pack}", "--target", "cortex-m4", "--int8", "-o", "{dir}/m"],
        ["--int8 calibrates task 'res' on its data: give --data res=FILE.npz"],
    ),
    (["build", "{pack}", "--int8", "-o", "{dir}/m"], ["--int8 cannot apply to --target llvm"]),
    (
        ["build", "{pack}", "--target", "cortex-m4", "--data", "res={res_data}", "-o", "{dir}/m"],
        ["--data cannot apply to a build without --int8"],
    ),
    (
        ["build", "{pack}", "--target", "cortex-m4", "--int8", "--data", "res={const_data}"]
        + ["--data", "inc={inc_data}", "-o", "{dir}/m"],
        ["task 'res': the 8 calibration samples are all equal"],
    ),
    (["examples", "{dir}"], ["'{dir}' exists and is not an empty folder"]),
    (["examples", "{res}"], ["exists and is not an empty folder"]),
]


@pytest.mark.parametrize("argv, words", REFUSED, ids=[" ".join(a[:3]) for a, _ in REFUSED])
def test_a_users_mistake_is_one_line_exit_2_and_writes_nothing(files, argv, words, capsys):
    folder, paths = files
    (folder / "notes.txt").write_text("mine")
    (folder / "foreign").mkdir(exist_ok=True)
    (folder / "foreign" / "thesis.tex").write_text("mine")
    fill = {**paths, "dir": str(folder), "nan": _bad_onnx(folder)}
    before = {p: os.path.getmtime(p) for p in folder.rglob("*")}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word.format(**fill) in err, err
    after = {p: os.path.getmtime(p) for p in folder.rglob("*")}
    assert after == before  # nothing new, nothing touched (inputs included)


def test_every_model_failing_intake_is_named_at_once(files, capsys):
    folder, paths = files
    argv = ["pack", f"nan={_bad_onnx(folder)}", f"dir={folder}", f"res={paths['res']}"]
    assert main([*argv, "--lossless", "-o", str(folder / "a.wvpack")]) == 2
    err = capsys.readouterr().err
    assert "task 'nan': weights ['b1.weight'] hold NaN" in err
    assert "task 'dir':" in err and "is a folder" in err
    assert "'res'" not in err and not (folder / "a.wvpack").exists()


def test_a_bad_manifest_value_is_named_by_its_key_not_a_flag(files, capsys):
    folder, paths = files
    manifest = folder / "m.toml"
    manifest.write_text(f'[tasks.res]\nmodel = "{paths["res"]}"\n\n[pack]\nrounds = -1\n')
    assert main(["pack", str(manifest), "-o", str(folder / "a.wvpack")]) == 2
    assert f"manifest '{manifest}': [pack] rounds -1: must be at least 0" in capsys.readouterr().err
    assert main(["pack", str(manifest), "--rounds", "-2", "-o", str(folder / "a.wvpack")]) == 2
    assert "--rounds -2: must be at least 0" in capsys.readouterr().err


def test_force_replaces_a_foreign_file_and_spaces_in_task_lists_are_stripped(files, capsys):
    folder, paths = files
    target = folder / "forced.wvpack"
    target.write_text("not a pack")
    assert main(["pack", f"res={paths['res']}", "--lossless", "--force", "-o", str(target)]) == 0
    assert wv.load_wvpack(target).plan.tasks.keys() == {"res"}
    assert main(["run", paths["pack"], "--tasks", "res, inc ,res", "--mode", "fused"]) == 0
    assert "3 requests" in capsys.readouterr().out


def test_fused_build_shows_no_tvm_warning_a_user_cannot_act_on(files, capfd):
    _, paths = files
    assert main(["run", paths["pack"], "--tasks", "res", "--mode", "fused"]) == 0
    assert "Fast mode segfaults" not in capfd.readouterr().err


def test_run_takes_inputs_and_saves_outputs_equal_to_the_model_alone(files, tmp_path, capsys):
    _, paths = files
    x = np.random.default_rng(3).normal(size=(1, 3, 10, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "outputs"
    argv = ["run", paths["pack"], "--tasks", "inc,res,inc", "--inputs", f"inc={tmp_path / 'x.npy'}"]
    assert main([*argv, "--save-outputs", str(out)]) == 0
    printed = capsys.readouterr().out
    task = next(t for t in wv.load_wvpack(paths["pack"]).tasks if t.name == "inc")
    alone = StandaloneModel(task).run(x)[0]
    np.testing.assert_array_equal(np.load(out / "0_inc_0.npy"), alone)
    np.testing.assert_array_equal(np.load(out / "2_inc_0.npy"), alone)
    assert np.array2string(alone.ravel()[:5], precision=4)[1:-1].split()[0] in printed
    x_bad = np.zeros((2, 3, 10, 10), np.float32)
    np.save(tmp_path / "bad.npy", x_bad)
    assert (
        main(["run", paths["pack"], "--tasks", "inc", "--inputs", f"inc={tmp_path / 'bad.npy'}"])
        == 2
    )
    assert "shape (2, 3, 10, 10), task 'inc' takes (1, 3, 10, 10)" in capsys.readouterr().err


def test_kernel_layout_pack_runs_mapped_without_moving_a_weight_byte(files, tmp_path, capsys):
    """`--kernel-layout` on pages of one OS page, then `run --mapped`: the outputs are the
    models' own, and the switches gather and transform nothing."""
    _, paths = files
    pack = str(tmp_path / "mapped.wvpack")
    argv = ["pack", f"res={paths['res']}", f"inc={paths['inc']}", "--lossless"]
    assert main([*argv, "--page-size", str(OS_PAGE // 4), "--kernel-layout", "-o", pack]) == 0
    x = {"res": examples.onnx_resnet_block()[1], "inc": examples.onnx_inception_block()[1]}
    for name, value in x.items():
        np.save(tmp_path / f"{name}.npy", value)
    inputs = [f"--inputs={name}={tmp_path / name}.npy" for name in x]
    out = tmp_path / "outputs"
    argv = ["run", pack, "--tasks", "res,inc,res", *inputs, "--mapped", "--save-outputs", str(out)]
    capsys.readouterr()
    assert main(argv) == 0
    assert "3 switches, 0 B gathered, 0 B transformed" in capsys.readouterr().out
    for i, name in enumerate(["res", "inc", "res"]):
        alone = StandaloneModel(wv.Task.from_onnx(paths[name], name=name)).run(x[name])[0]
        np.testing.assert_allclose(np.load(out / f"{i}_{name}_0.npy"), alone, atol=1e-5, rtol=0)


def test_input_shape_fixes_a_symbolic_dimension(tmp_path, capsys):
    model, _ = examples.onnx_inception_block()
    for axis, name in [(0, "batch"), (2, "height")]:
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = name
    path = str(tmp_path / "sym.onnx")
    onnx.save(model, path)
    out = str(tmp_path / "sym.wvpack")
    assert main(["pack", f"sym={path}", "--lossless", "-o", out]) == 2
    assert "symbolic shape" in capsys.readouterr().err
    assert (
        main(["pack", f"sym={path}", "--input-shape", "sym=1x3x10x10", "--lossless", "-o", out])
        == 0
    )
    assert wv.load_wvpack(out).tasks[0].input_types == [((1, 3, 10, 10), "float32")]
    by_input = f"{model.graph.input[0].name}=1x3x12x10"  # the model's input name names it too
    assert main(["pack", f"sym={path}", "--input-shape", by_input, "--lossless", "-o", out]) == 0
    assert wv.load_wvpack(out).tasks[0].input_types == [((1, 3, 12, 10), "float32")]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")
def test_cuda_build_errors_are_short_and_leave_no_folder(files, capsys):
    folder, paths = files
    out = folder / "cuda"
    assert (
        main(["build", paths["pack"], "--target", "cuda", "--arch", "sm_999", "-o", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert "nvcc cannot compile the kernels for sm_999" in err and err.count("\n") == 1
    assert not out.exists() and not list(folder.glob(".cuda.*"))
    if tvm.cuda().exist:
        return
    assert main(["build", paths["pack"], "--target", "cuda", "-o", str(out)]) == 0
    assert main(["run", paths["pack"], "--library", str(out), "--tasks", "res"]) == 2
    assert "was built for cuda and this machine has no CUDA GPU" in capsys.readouterr().err


_BUILD = "import sys; from tvm_weightvirt.apps.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.slow
def test_a_killed_build_leaves_no_library_folder_under_the_target_name(files, tmp_path):
    _, paths = files
    out = tmp_path / "lib"
    argv = [sys.executable, "-c", _BUILD, "build", paths["pack"], "-o", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    whole = time.perf_counter() - start
    shutil.rmtree(out)
    for delay in np.random.default_rng(0).uniform(0.5 * whole, whole, 3):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # the rename happened: the folder is whole
            assert {"library.so", "library.json"} <= set(os.listdir(out))
            wv.Library.load(str(out))
            shutil.rmtree(out)


def test_a_model_without_weights_packs_and_runs(tmp_path, capsys):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        tmp_path / "relu.onnx",
    )
    pack = str(tmp_path / "relu.wvpack")
    assert main(["pack", f"relu={tmp_path / 'relu.onnx'}", "--lossless", "-o", pack]) == 0
    for mode in ["materialize", "fused"]:
        assert main(["run", pack, "--tasks", "relu,relu", "--mode", mode]) == 0
    assert capsys.readouterr().out.count("relu: outputs [(1, 4)]") == 4


def test_page_aligned_pack_builds_zero_copy_for_cortex_m(files, tmp_path):
    """`wvirt pack --page-aligned` starts every weight on a page; `wvirt build --target
    cortex-m4 --zero-copy flash` then writes a project whose kernels read the pages in flash:
    no weight buffer in RAM, only a scratch for the weights read twice or more per element
    (every weight of these batch-2 graphs: their convs, and their dense layers at batch 2)."""
    folder, paths = files
    pack = str(tmp_path / "aligned.wvpack")
    argv = ["pack", f"res={paths['res']}", f"inc={paths['inc']}", "--lossless", "--page-aligned"]
    assert main([*argv, "--page-size", "128", "-o", pack]) == 0
    plan = wv.load_wvpack(pack).plan
    assert all(t.layout.page_aligned for t in plan.tasks.values())
    out = tmp_path / "m4"
    argv = ["build", pack, "--target", "cortex-m4", "--zero-copy", "flash", "-o", str(out)]
    assert main(argv) == 0
    manifest = mcu.load_manifest(str(out))
    assert manifest["zero_copy"] and manifest["pool_in"] == "flash"
    ram = manifest["data_bytes"]["ram"]
    assert "pages" in manifest["data_bytes"]["flash"] and "weight_buffer" not in ram
    assert 0 < ram["scratch"] < plan.task("res").layout.n_elems * 4


def test_an_int8_build_calibrates_each_task_and_refuses_a_pack_that_shares_pages(
    files, tmp_path, capsys
):
    """`wvirt build --target cortex-m4 --int8 --data NAME=FILE.npz` writes a project of int8
    kernels (weights a byte each, beside per-channel multipliers and offsets); a pack whose
    tasks share pages is refused (int8 pages are not implemented yet) and nothing is written."""
    folder, paths = files
    out = tmp_path / "m4"
    data = ["--data", f"res={paths['res_data']}", "--data", f"inc={paths['inc_data']}"]
    assert (
        main(["build", paths["pack"], "--target", "cortex-m4", "--int8", *data, "-o", str(out)])
        == 0
    )
    assert "cortex-m4 int8 C project for 2 tasks" in capsys.readouterr().out
    kernels = (out / "kernels.c").read_text()
    assert "int8_t" in kernels and "int32_t conv2d_nchw" in kernels.replace("_intermediate", "")
    plan = wv.load_wvpack(paths["pack"]).plan
    float_bytes = 4 * sum(plan.task(n).layout.n_elems for n in plan.tasks)
    assert mcu.load_manifest(str(out))["data_bytes"]["flash"]["constants"] < float_bytes / 2
    pack = wv.load_wvpack(paths["pack"])
    res = next(t for t in pack.tasks if t.name == "res")
    twin = wv.Task(res.name + "2", res.mod, res.weights)
    lossless = wv.PagePlan.lossless([res, twin], page_size=plan.page_size)
    shared = wv.PagePlan(
        lossless.page_size,
        lossless.pool,
        {"res": lossless.task("res"), "res2": lossless.task("res")},  # both read res's pages
    )
    wv.save_wvpack(tmp_path / "shared.wvpack", shared, [res, twin])
    data = ["--data", f"res={paths['res_data']}", "--data", f"res2={paths['res_data']}"]
    argv = ["build", str(tmp_path / "shared.wvpack"), "--target", "cortex-m4", "--int8", *data]
    assert main([*argv, "-o", str(tmp_path / "m")]) == 2
    assert "this pack's tasks share" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_an_aarch64_build_without_the_cross_linker_says_how_to_get_it(
    files, tmp_path, capsys, monkeypatch
):
    _, paths = files
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if "aarch64" in tool else which(tool))
    out = tmp_path / "lib"
    assert main(["build", paths["pack"], "--target", "aarch64", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs the cross compiler 'aarch64-linux-gnu-g++'" in err
    assert "make aarch64-toolchain" in err and not out.exists()
    assert main(["build", paths["pack"], "--target", "aarch64", "--tune", "2", "-o", str(out)]) == 2
    assert "--tune for --target aarch64 measures on the device" in capsys.readouterr().err
