"""CUDA: merged tasks compile for Jetson Orin (sm_87) and sm_90 without a GPU, every kernel of
every task is in the CUDA module, and nvcc compiles them ahead of time. Libraries export and
load back."""

import shutil

import numpy as np
import pytest
import tvm
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.compile.cuda import compile_fatbin, cuda_source


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
    source = cuda_source(library)
    kernels = library.kernels()
    assert sorted(kernels) == sorted(t.name for t in tasks)
    for task, calls in kernels.items():
        assert calls, task
        missing = [c for c in calls if f" {c}_kernel" not in source]
        assert missing == [], (task, missing)
    if mode == "materialize":
        assert " wv_gather_pages_kernel" in source


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")
def test_kernels_compile_ahead_of_time_to_an_sm87_fatbin(small_nets, tmp_path):
    tasks, _, _ = small_nets
    library = wv.build(
        wv.lower(tasks[:2], wv.PagePlan.lossless(tasks[:2])),
        target={"kind": "cuda", "arch": "sm_87"},
    )
    size = compile_fatbin(library, "sm_87", str(tmp_path / "kernels.fatbin"))
    assert size == (tmp_path / "kernels.fatbin").stat().st_size > 1000


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
