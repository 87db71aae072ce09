"""On a CUDA GPU: every backend gathers the plan's exact bits (fused, materialize, exclusive
pages from level 2 through page-locked staging, SmartDeal-coded pages), switching A->B->A is
never stale, prefetching exclusive pages hits, and three small nets give the CPU's outputs in
both modes. The libraries are loaded, never compiled here: from WVIRT_GPU_ARTIFACTS (made by
`tests/gpu/gpu_artifacts.py` where TVM's compiler and nvcc are) or, without it, built first.
`benchmarks/gpu_check.sh` runs these with the GPU switch benchmark."""

import os
import shutil

import numpy as np
import pytest
import tvm
from gpu_artifacts import NETS, backend_folder, prepare
from page_plans import BACKENDS, SHAPES
from tvm_weightvirt.runtime import MultitaskRuntime

from tvm_weightvirt.abi import MODES
from tvm_weightvirt.compile.cuda import cuobjdump_elves, library_cuda_binaries
from tvm_weightvirt.compile.library import Library
from tvm_weightvirt.frontend.artifact import load_wvpack

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not tvm.cuda().exist, reason="no CUDA GPU on this machine"),
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> str:
    given = os.environ.get("WVIRT_GPU_ARTIFACTS")
    if given:
        return given
    arch = "sm_" + tvm.cuda().compute_version.replace(".", "")
    return prepare(str(tmp_path_factory.mktemp("gpu")), (arch,))


def _runtime(folder: str, library: str = "cuda") -> tuple:
    pack = os.path.join(folder, "plan.wvpack")
    plan = load_wvpack(pack, graphs=False).plan
    loaded = Library.load(os.path.join(folder, library))
    return plan, MultitaskRuntime(plan, loaded, tvm.cuda(), level2=pack)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_gathers_the_plans_pages_bit_for_bit_on_the_gpu(artifacts, backend):
    mode, page_size, _ = BACKENDS[backend]
    plan, runtime = _runtime(os.path.join(artifacts, backend_folder(backend)))
    for name in ["a", "b", "a", "b"]:  # A->B->A: each switch replaces every page
        ones = [np.ones(s, np.float32) for s in SHAPES[name]]
        for out, (weight, value) in zip(runtime.run(name, *ones), plan.read(name).items()):
            np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")
        if mode == "materialize":
            n = plan.task(name).layout.n_pages * page_size
            gathered = runtime.weight_buffer.numpy()[:n]
            np.testing.assert_array_equal(gathered, plan.pages(name).reshape(-1))
    assert runtime.counters.switches == 4


def test_exclusive_pages_are_prefetched_while_the_gpu_runs(artifacts):
    plan, runtime = _runtime(os.path.join(artifacts, backend_folder(list(BACKENDS)[2])))
    sequence = ["a", "b", "a", "b", "a"]
    requests = [(n, [np.ones(s, np.float32) for s in SHAPES[n]]) for n in sequence]
    outputs = runtime.run_many(requests)
    for name, out in zip(sequence, outputs):
        for got, value in zip(out, plan.read(name).values()):
            np.testing.assert_array_equal(got, value)
    c = runtime.counters
    assert c.prefetch_hits == 4 and c.switches == 5  # every switch after the first
    exclusive = {n: t.n_exclusive_pages * plan.page_size * 4 for n, t in plan.tasks.items()}
    assert c.bytes_read_l2 == sum(exclusive[n] for n in sequence)


@pytest.mark.parametrize("mode", MODES)
def test_small_nets_give_the_cpus_outputs(artifacts, mode):
    folder = os.path.join(artifacts, NETS)
    plan, runtime = _runtime(folder, mode)
    reference = np.load(os.path.join(folder, "reference.npz"))
    names = list(plan.tasks)
    for name in names + names[::-1]:
        outputs = runtime.run(name, reference[f"{name}.input"])
        for k, out in enumerate(outputs):
            expected = reference[f"{name}.output{k}"]
            np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_library_carries_this_gpus_machine_code(artifacts):
    path = os.path.join(artifacts, NETS, "materialize", "library.so")
    [(fmt, code)] = library_cuda_binaries(path)
    arch = "sm_" + tvm.cuda().compute_version.replace(".", "")
    listed = cuobjdump_elves(code)
    if listed is None and shutil.which("cuobjdump") is None:
        pytest.skip("no cuobjdump on this machine")
    assert fmt == "fatbin" and any(arch in name for name in listed), listed
