"""CUDA: merged tasks compile for Jetson Orin (sm_87) and sm_90 without a GPU, every kernel of
every task (the gathers of exclusive and SmartDeal pages included) is in the CUDA module, and
an exported library carries nvcc's machine code for each listed arch instead of source.
Libraries export and load back; a library runs only on the device kind it was built for."""

import shutil

import numpy as np
import pytest
import tvm
from page_plans import SHAPES, coded_exclusive_plan, coded_plan, echo_task, exclusive_plan
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.abi import (
    CODED_EXCLUSIVE_GATHER_FUNC,
    CODED_GATHER_FUNC,
    EXCLUSIVE_GATHER_FUNC,
)
from tvm_weightvirt.apps import examples
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.compile import cuda
from tvm_weightvirt.compile.cuda import cuda_source, fatbin_entries, library_cuda_binaries

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


@pytest.fixture(scope="module")
def small_nets():
    """Three small nets (2-D CNN with batch norm, 1-D CNN, MLP; seeded, untrained) on a
    lossless plan: the kernels do not depend on sharing or training."""
    models = {
        kind: examples.torch_model(kind, seed) for seed, kind in enumerate(examples.TORCH_MODELS)
    }
    tasks = [wv.Task.from_torch(model, (x,), name=kind) for kind, (model, x) in models.items()]
    return tasks, wv.PagePlan.lossless(tasks), models


@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
@pytest.mark.parametrize("mode", ["materialize", "fused"])
def test_suite_compiles_for_cuda_with_every_kernel(small_nets, arch, mode):
    tasks, plan, _ = small_nets
    library = wv.build(wv.lower(tasks, plan, mode=mode), target={"kind": "cuda", "arch": arch})
    source = cuda_source(library.executable)
    kernels = library.kernels()
    assert sorted(kernels) == sorted(t.name for t in tasks)
    for task, calls in kernels.items():
        assert calls, task
        missing = [c for c in calls if f" {c}_kernel" not in source]
        assert missing == [], (task, missing)
    if mode == "materialize":
        assert " wv_gather_pages_kernel" in source


@pytest.mark.parametrize(
    "make_plan, kernels",
    [
        (exclusive_plan, [EXCLUSIVE_GATHER_FUNC]),
        (coded_plan, [CODED_GATHER_FUNC]),
        (coded_exclusive_plan, [CODED_GATHER_FUNC, CODED_EXCLUSIVE_GATHER_FUNC]),
    ],
    ids=["exclusive", "coded", "coded exclusive"],
)
def test_gathers_of_exclusive_and_coded_pages_compile_for_cuda(make_plan, kernels):
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, 100 if make_plan is exclusive_plan else 96)
    library = wv.build(wv.lower(tasks, plan), target={"kind": "cuda", "arch": "sm_87"})
    for kernel in kernels:
        assert f" {kernel}_kernel" in cuda_source(library.executable)


@needs_nvcc
def test_exported_library_holds_machine_code_for_each_arch_and_no_source(small_nets, tmp_path):
    tasks, _, _ = small_nets
    plan = wv.PagePlan.lossless(tasks[:2])
    library = wv.build(
        wv.lower(tasks[:2], plan),
        target={"kind": "cuda", "arch": "sm_87"},
        archs=["sm_87", "sm_90"],
    )
    library.export(str(tmp_path))
    [(fmt, code)] = library_cuda_binaries(str(tmp_path / "library.so"))
    assert fmt == "fatbin"
    assert fatbin_entries(code) == [("elf", "sm_87"), ("elf", "sm_90")]
    assert b"__global__" not in code and b"extern" not in code  # no CUDA source inside
    listed = cuda.cuobjdump_elves(code)  # where the toolkit has cuobjdump: its word too
    assert listed is None or [name.rsplit(".", 2)[-2] for name in listed] == ["sm_87", "sm_90"]


def test_cuda_build_errors_name_the_fix(small_nets, tmp_path, monkeypatch):
    tasks, _, _ = small_nets
    mod = wv.lower(tasks[:1], wv.PagePlan.lossless(tasks[:1]))
    with pytest.raises(ValueError, match="below the target's arch sm_87.*lowest arch \\(sm_80\\)"):
        wv.build(mod, target={"kind": "cuda", "arch": "sm_87"}, archs=["sm_87", "sm_80"])
    with pytest.raises(ValueError, match="'sm87': expected sm_<number>"):
        wv.build(mod, target={"kind": "cuda", "arch": "sm_87"}, archs=["sm87"])
    with pytest.raises(ValueError, match="apply to cuda targets, not llvm"):
        wv.build(mod, archs=["sm_87"])
    library = wv.build(mod, target={"kind": "cuda", "arch": "sm_87"})
    monkeypatch.setattr(cuda.shutil, "which", lambda name: None)
    with pytest.raises(
        ValueError, match="nvcc is not on PATH.*cuda-toolkit.*needs only the CUDA driver"
    ):
        library.export(str(tmp_path / "out"))


def test_a_library_runs_only_on_the_device_kind_it_was_built_for(small_nets):
    tasks, plan, _ = small_nets
    mod = wv.lower(tasks, plan)
    on_gpu = wv.build(mod, target={"kind": "cuda", "arch": "sm_87"})
    with pytest.raises(ValueError, match="built for cuda \\(sm_87\\): run it on a GPU.*not on cpu"):
        MultitaskRuntime(plan, on_gpu, tvm.cpu())
    with pytest.raises(ValueError, match="built for llvm \\(the CPU\\).*not cuda:0"):
        MultitaskRuntime(plan, wv.build(mod), tvm.cuda())


@pytest.mark.skipif(not tvm.cuda().exist, reason="no CUDA GPU on this machine")
def test_runs_on_a_gpu(small_nets):
    tasks, plan, models = small_nets
    library = wv.build(
        wv.lower(tasks, plan, mode="fused"), target={"kind": "cuda", "arch": "sm_90"}
    )
    runtime = MultitaskRuntime(plan, library, tvm.cuda())
    for t in tasks:
        model, x = models[t.name]
        expected = model(x).detach().numpy()
        np.testing.assert_allclose(runtime.run(t.name, x.numpy())[0], expected, atol=1e-4)


def test_library_exports_and_loads(small_nets, tmp_path):
    tasks, _, models = small_nets
    library = wv.build(wv.lower(tasks[:2], wv.PagePlan.lossless(tasks[:2])))
    library.export(str(tmp_path / "lib"))
    loaded = wv.Library.load(str(tmp_path / "lib"))
    assert loaded.mode == "materialize" and loaded.tasks == library.tasks
    plan2 = wv.PagePlan.lossless(tasks[:2])
    name = tasks[0].name
    x = models[name][1].numpy()
    np.testing.assert_array_equal(
        MultitaskRuntime(plan2, loaded).run(name, x)[0],
        MultitaskRuntime(plan2, library).run(name, x)[0],
    )
    with pytest.raises(ValueError, match="holds no library.json"):
        wv.Library.load(str(tmp_path))


@pytest.mark.slow
def test_wvirt_build_then_run(mini_wvpack, tmp_path, capsys):
    pack = mini_wvpack
    assert main(["build", str(pack), "-o", str(tmp_path / "build")]) == 0
    library = str(tmp_path / "build")
    run = ["run", str(pack), "--library", library, "--tasks", "wine,iris,wine", "--policy", "group"]
    assert main(run) == 0
    assert "3 requests, 2 switches" in capsys.readouterr().out  # grouped: wine, wine, iris
