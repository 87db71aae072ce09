"""Cortex-M deployment: the generated C computes what TVM's llvm build of the same plan computes
(host gcc and QEMU M4, over switches A→B→A→C), the packed suite fits 256 KB RAM where the
separately built one does not, and a crash, hang or oversized plan fails with a clear message."""

import shutil

import numpy as np
import pytest
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt import cortexm, suite
from tvm_weightvirt.cli import main
from tvm_weightvirt.optimize import OptimizeConfig
from tvm_weightvirt.pack import PackConfig, pack_tasks
from tvm_weightvirt.separation import SeparationConfig

TASKS = ["digits", "wine", "iris", "breast_cancer"]
SEQUENCE = ["digits", "wine", "digits", "iris"]  # A→B→A→C
L1_BUDGET = 96 * 1024  # pool + page tables; the rest of each task is exclusive pages in flash

needs_gcc = pytest.mark.skipif(bool(cortexm.missing_tools(host=True)), reason="no host gcc/make")
needs_arm = pytest.mark.skipif(
    bool(cortexm.missing_tools()),
    reason="no Arm toolchain / QEMU: apt-get install -y --no-install-recommends "
    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm (or `make arm-toolchain`)",
)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Four suite tasks separated under a 96 KiB level-1 budget (no retraining: the numbers
    here are about the deployment, not the accuracy), their packed and separate C projects,
    and the llvm reference outputs over SEQUENCE."""
    tasks = suite.load_suite(TASKS)
    config = PackConfig(
        separation=SeparationConfig(l1_budget_bytes=L1_BUDGET), optimize=OptimizeConfig(rounds=0)
    )
    plan = pack_tasks(tasks, config, progress=False).plan
    graphs = [wv.Task.from_torch(t.model, (t.example_input(),), name=t.name) for t in tasks]
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in SEQUENCE]
    folder = tmp_path_factory.mktemp("cortexm")
    projects = {}
    for kind, is_packed in [("packed", True), ("separate", False)]:
        projects[kind] = str(folder / kind)
        cortexm.generate_project(graphs, plan, projects[kind], packed=is_packed, check_fit=False)
        cortexm.write_requests(projects[kind], [(n, [inputs[n]]) for n in SEQUENCE])
    return plan, graphs, reference, projects


def _max_err(run: cortexm.McuRun, reference: list[np.ndarray]) -> float:
    return max(float(np.abs(out[0] - ref).max()) for out, ref in zip(run.outputs, reference))


def test_executor_shares_kernels_and_arena(packed):
    """Identical kernels are emitted once; intermediates reuse the arena; sections as planned."""
    plan, graphs, reference, projects = packed
    manifest = cortexm.load_manifest(projects["packed"])
    with open(f"{projects['packed']}/kernels.c") as f:
        n_kernels = f.read().count("TVM_DLL int32_t __tvm_ffi_") // 2  # declaration + definition
    calls = {n: t["kernel_calls"] for n, t in manifest["tasks"].items()}
    assert n_kernels < sum(calls.values())  # wine and iris share their hidden layers' kernels
    ram = manifest["data_bytes"]["ram"]
    assert ram["pool"] == plan.n_pool_pages * 100 * 4  # pages × weights/page × fp32
    assert ram["weight_buffer"] == max(t.layout.n_pages for t in plan.tasks.values()) * 100 * 4
    assert manifest["data_bytes"]["flash"]["exclusive"] == plan.exclusive_bytes > 0


@needs_gcc
def test_host_build_matches_tvm_llvm(packed):
    plan, graphs, reference, projects = packed
    run = cortexm.run_project(projects["packed"], host=True)
    assert [len(o) for o in run.outputs] == [1] * len(SEQUENCE)
    assert _max_err(run, reference) <= 1e-5


@needs_arm
@needs_gcc
def test_qemu_m4_matches_host_bit_for_bit(packed):
    plan, graphs, reference, projects = packed
    host = cortexm.run_project(projects["packed"], host=True)
    qemu = cortexm.run_project(projects["packed"], timeout=60)
    for on_host, on_m4 in zip(host.outputs, qemu.outputs):
        np.testing.assert_array_equal(on_m4[0], on_host[0])  # -ffp-contract=off on both
    assert _max_err(qemu, reference) <= 1e-5
    # every switch in A→B→A→C gathers; the same task costs the same instructions, to one
    # SysTick tick (the tick's phase at the start differs)
    assert [name for name, _ in qemu.switch_instructions] == SEQUENCE
    for counts in (qemu.switch_instructions, qemu.run_instructions):
        first, again = counts[0][1], counts[2][1]
        assert first > 0 and abs(first - again) <= cortexm.INSTRUCTIONS_PER_TICK


@needs_arm
def test_packed_fits_256k_ram_where_separate_does_not(packed):
    plan, graphs, reference, projects = packed
    packed_memory = cortexm.memory_report(projects["packed"])
    separate_memory = cortexm.memory_report(projects["separate"])
    budget = cortexm.TARGETS["cortex-m4"].ram_bytes
    assert packed_memory["ram_bytes"] <= budget < separate_memory["ram_bytes"]
    sections = packed_memory["sections"]
    assert sections[".wv_pool"] == plan.pool_bytes  # the pool, in RAM
    assert sections[".wv_exclusive"] == plan.exclusive_bytes  # exclusive pages, in flash
    dense = sum(t.layout.n_elems * 4 for t in plan.tasks.values())
    assert separate_memory["sections"][".data"] >= dense  # every task's weights in RAM
    assert packed_memory["flash_bytes"] <= cortexm.TARGETS["cortex-m4"].flash_bytes


@needs_arm
@pytest.mark.parametrize(
    "body, message",
    [('__asm__ volatile("udf #0");', "output ends with:\nFAULT"), ("for (;;) {}", "no exit")],
)
def test_crash_or_hang_fails_within_timeout(packed, tmp_path, body, message):
    plan, graphs, reference, projects = packed
    shutil.copytree(projects["packed"], tmp_path / "bad")
    (tmp_path / "bad" / "main.c").write_text(f"int main(void) {{ {body} return 0; }}\n")
    with pytest.raises(cortexm.McuRunError, match=message):
        cortexm.run_project(str(tmp_path / "bad"), timeout=5)


def test_plan_that_does_not_fit_fails_with_the_numbers(packed, tmp_path):
    plan, graphs, reference, projects = packed
    dense = sum(t.layout.n_elems * 4 for t in plan.tasks.values())
    with pytest.raises(
        ValueError, match=rf"RAM needs \d+ B \(.*dense_weights {dense}\) > 262144 B"
    ):
        cortexm.generate_project(graphs, plan, str(tmp_path), packed=False)


@needs_arm
def test_cli_build_and_run_on_qemu(packed, tmp_path, capsys):
    """`wvirt build --target cortex-m4` writes the same C as the API (the output is
    deterministic); `wvirt run --qemu` serves the sequence and prints the counters."""
    plan, graphs, reference, projects = packed
    wv.save_wvpack(tmp_path / "suite.wvpack", plan, graphs)
    out = tmp_path / "m4"
    assert (
        main(["build", str(tmp_path / "suite.wvpack"), "--target", "cortex-m4", "-o", str(out)])
        == 0
    )
    for filename in ("kernels.c", "executor.c", "weights.c"):
        assert (out / filename).read_text() == open(f"{projects['packed']}/{filename}").read()
    assert main(["run", str(out), "--qemu", "--tasks", "wine,iris,wine"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("switch to") == 3 and printed.count("inference ") == 3
    assert "B RAM" in printed
    assert main(["run", str(out), "--qemu", "--tasks", "wine,har"]) == 2
    assert "tasks ['har'] are not in" in capsys.readouterr().err
