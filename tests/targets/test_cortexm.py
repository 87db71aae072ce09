"""Cortex-M deployment: the generated C computes what TVM's llvm build of the same plan computes
(host gcc and QEMU M4, over switches A→B→A→C; a SmartDeal-coded pool, and coded exclusive pages
in flash, decoded at each switch, also on QEMU M7), the packed suite fits 256 KB RAM where the separately built one does not, a coded
pool takes its packed codes + 18 B (a float16 basis) per page, and a crash, hang or oversized plan fails with a clear message.
Zero-copy builds (kernels read pages in place, in RAM or flash) compute the materialized build's
outputs bit for bit on M4 and M7, switch in the same few instructions for every task, and fit
the 10-task suite in 256 KB RAM."""

import shutil

import numpy as np
import pytest
import torch
from page_plans import SHAPES, coded_plan, echo_task, shared_plan
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.separation import SeparationConfig
from tvm_weightvirt.algorithms.smartdeal import encode_pages
from tvm_weightvirt.apps import suite
from tvm_weightvirt.apps.cli import main
from tvm_weightvirt.coded_pages import CodedPages
from tvm_weightvirt.frontend.packing import pack
from tvm_weightvirt.plan import TaskPages
from tvm_weightvirt.targets import mcu

pytestmark = pytest.mark.slow  # trained suite tasks, cross builds and QEMU runs

TASKS = ["digits", "wine", "iris", "breast_cancer"]
SEQUENCE = ["digits", "wine", "digits", "iris"]  # A→B→A→C
L1_BUDGET = 96 * 1024  # pool + page tables; the rest of each task is exclusive pages in flash
CODED_PAGE_SIZE = 96  # SmartDeal pages hold rows of 3 coefficients
ZERO_COPY_PAGE_SIZE = 128  # rows of 128, 64 and 32 weights start on pages
ZERO_COPY_SEQUENCE = ["digits", "wine", "digits", "iris", "breast_cancer"]

needs_gcc = pytest.mark.skipif(bool(mcu.missing_tools(host=True)), reason="no host gcc/make")
needs_arm = pytest.mark.skipif(
    bool(mcu.missing_tools()),
    reason="no Arm toolchain / QEMU: apt-get install -y --no-install-recommends "
    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm (or `make arm-toolchain`)",
)


@pytest.fixture(scope="module")
def suite_tasks():
    """The four suite tasks (torch), their graphs and example inputs."""
    tasks = suite.load_suite(TASKS)
    graphs = [t.task for t in tasks]
    return tasks, graphs, {t.name: t.example_input().numpy() for t in tasks}


@pytest.fixture(scope="module")
def packed(suite_tasks, tmp_path_factory):
    """Four suite tasks separated under a 96 KiB level-1 budget (no retraining: the numbers
    here are about the deployment, not the accuracy), their packed and separate C projects,
    and the llvm reference outputs over SEQUENCE."""
    tasks, graphs, inputs = suite_tasks
    config = PackConfig(
        separation=SeparationConfig(l1_budget_bytes=L1_BUDGET), optimize=OptimizeConfig(rounds=0)
    )
    plan = pack(*suite.packable(tasks), config).plan
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in SEQUENCE]
    folder = tmp_path_factory.mktemp("cortexm")
    projects = {}
    for kind, is_packed in [("packed", True), ("separate", False)]:
        projects[kind] = str(folder / kind)
        mcu.generate_project(graphs, plan, projects[kind], packed=is_packed, check_fit=False)
        mcu.write_requests(projects[kind], [(n, [inputs[n]]) for n in SEQUENCE])
    return plan, graphs, reference, projects


@pytest.fixture(scope="module")
def coded(suite_tasks, tmp_path_factory):
    """The same tasks on a SmartDeal-coded pool, laid out as NWV without matching or training
    (every task on the first pages of one pool, the largest task's pages as codes x bases), the
    llvm reference over SEQUENCE, and C projects: coded on M4 and M7, the same pool decoded
    to float32 pages on M4 (for the memory comparison), and zero-copy on M4 with the codes in
    flash (page-aligned, so each weight's pages can be decoded on their own)."""
    tasks, graphs, inputs = suite_tasks
    lossless = wv.PagePlan.lossless(graphs, page_size=CODED_PAGE_SIZE, page_aligned=True)
    largest = max(lossless.tasks, key=lambda n: lossless.task(n).layout.n_pages)
    pages = {n: TaskPages(t.layout, np.arange(t.layout.n_pages)) for n, t in lossless.tasks.items()}
    plan = wv.PagePlan.from_coded(CODED_PAGE_SIZE, encode_pages(lossless.pages(largest)), pages)
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in SEQUENCE]
    folder = tmp_path_factory.mktemp("cortexm-coded")
    float_pool = wv.PagePlan(CODED_PAGE_SIZE, plan.pool, plan.tasks)
    projects = {}
    for kind, kind_plan, target, options in [
        ("m4", plan, "cortex-m4", {}),
        ("m7", plan, "cortex-m7", {}),
        ("float_pool", float_pool, "cortex-m4", {}),
        ("zero_copy_flash", plan, "cortex-m4", {"zero_copy": True, "pool_in": "flash"}),
    ]:
        projects[kind] = str(folder / kind)
        mcu.generate_project(graphs, kind_plan, projects[kind], target=target, **options)
        mcu.write_requests(projects[kind], [(n, [inputs[n]]) for n in SEQUENCE])
    return plan, graphs, reference, projects


def _max_err(run: mcu.McuRun, reference: list[np.ndarray]) -> float:
    return max(float(np.abs(out[0] - ref).max()) for out, ref in zip(run.outputs, reference))


def test_executor_shares_kernels_and_arena(packed):
    """Identical kernels are emitted once; intermediates reuse the arena; sections as planned."""
    plan, graphs, reference, projects = packed
    manifest = mcu.load_manifest(projects["packed"])
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
    run = mcu.run_project(projects["packed"], host=True)
    assert [len(o) for o in run.outputs] == [1] * len(SEQUENCE)
    assert _max_err(run, reference) <= 1e-5


@needs_arm
@needs_gcc
def test_qemu_m4_matches_host_bit_for_bit(packed):
    plan, graphs, reference, projects = packed
    host = mcu.run_project(projects["packed"], host=True)
    qemu = mcu.run_project(projects["packed"], timeout=60)
    for on_host, on_m4 in zip(host.outputs, qemu.outputs):
        np.testing.assert_array_equal(on_m4[0], on_host[0])  # -ffp-contract=off on both
    assert _max_err(qemu, reference) <= 1e-5
    # every switch in A→B→A→C gathers; the same task costs the same instructions, to one
    # SysTick tick (the tick's phase at the start differs)
    assert [name for name, _ in qemu.switch_instructions] == SEQUENCE
    for counts in (qemu.switch_instructions, qemu.run_instructions):
        first, again = counts[0][1], counts[2][1]
        assert first > 0 and abs(first - again) <= mcu.INSTRUCTIONS_PER_TICK


@needs_arm
def test_packed_fits_256k_ram_where_separate_does_not(packed):
    plan, graphs, reference, projects = packed
    packed_memory = mcu.memory_report(projects["packed"])
    separate_memory = mcu.memory_report(projects["separate"])
    budget = mcu.TARGETS["cortex-m4"].ram_bytes
    assert packed_memory["ram_bytes"] <= budget < separate_memory["ram_bytes"]
    sections = packed_memory["sections"]
    assert sections[".wv_pool"] == plan.pool_bytes  # the pool, in RAM
    assert sections[".wv_exclusive"] == plan.exclusive_bytes  # exclusive pages, in flash
    dense = sum(t.layout.n_elems * 4 for t in plan.tasks.values())
    assert separate_memory["sections"][".data"] >= dense  # every task's weights in RAM
    assert packed_memory["flash_bytes"] <= mcu.TARGETS["cortex-m4"].flash_bytes


@needs_arm
@pytest.mark.parametrize(
    "body, message",
    [('__asm__ volatile("udf #0");', "output ends with:\nFAULT"), ("for (;;) {}", "no exit")],
)
def test_crash_or_hang_fails_within_timeout(packed, tmp_path, body, message):
    plan, graphs, reference, projects = packed
    shutil.copytree(projects["packed"], tmp_path / "bad")
    (tmp_path / "bad" / "main.c").write_text(f"int main(void) {{ {body} return 0; }}\n")
    with pytest.raises(mcu.McuRunError, match=message):
        mcu.run_project(str(tmp_path / "bad"), timeout=5)


def test_plan_that_does_not_fit_fails_with_the_numbers(packed, tmp_path):
    plan, graphs, reference, projects = packed
    dense = sum(t.layout.n_elems * 4 for t in plan.tasks.values())
    with pytest.raises(
        ValueError, match=rf"RAM needs \d+ B \(.*dense_weights {dense}\) > 262144 B"
    ):
        mcu.generate_project(graphs, plan, str(tmp_path), packed=False)


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


@needs_arm
@needs_gcc
def test_coded_pool_is_decoded_at_each_switch_as_tvm_llvm_does(coded):
    """Host gcc and QEMU M4 decode the coded pages into what TVM's `wv_gather_coded_pages`
    computes (same products and sums, k = 0, 1, 2 in order): outputs equal llvm's, bit for bit
    between host and M4."""
    plan, graphs, reference, projects = coded
    manifest = mcu.load_manifest(projects["m4"])
    n_values = 1 << plan.coded.format.width  # one float per code of the pool's format
    assert manifest["coded"] and manifest["data_bytes"]["flash"]["code_values"] == 4 * n_values
    host = mcu.run_project(projects["m4"], host=True)
    qemu = mcu.run_project(projects["m4"], timeout=60)
    assert _max_err(host, reference) <= 1e-5 and _max_err(qemu, reference) <= 1e-5
    for on_host, on_m4 in zip(host.outputs, qemu.outputs):
        np.testing.assert_array_equal(on_m4[0], on_host[0])
    assert [name for name, _ in qemu.switch_instructions] == SEQUENCE
    first, again = qemu.switch_instructions[0][1], qemu.switch_instructions[2][1]
    assert first > 0 and abs(first - again) <= mcu.INSTRUCTIONS_PER_TICK


@needs_arm
def test_coded_pool_takes_codes_and_bases_in_ram(coded):
    """The coded pool is 4 ceil(P / (32 // width)) + 18 B per page in RAM (codes packed in the
    pool's format, a 3x3 float16 basis; the bases padded to a 4-byte boundary) instead of 4P:
    RAM shrinks by exactly the difference; flash by the same less the code table (4 B per code
    value)."""
    plan, graphs, reference, projects = coded
    n_pages, width = plan.n_pool_pages, plan.coded.format.width
    coded_memory = mcu.memory_report(projects["m4"])
    float_memory = mcu.memory_report(projects["float_pool"])
    page_bytes = 4 * -(-96 // (32 // width)) + 18
    assert plan.pool_bytes == n_pages * page_bytes
    padded = n_pages * page_bytes + 2 * (n_pages % 2)  # 18 B bases: 2 B short of a word if odd
    manifest = mcu.load_manifest(projects["m4"])["data_bytes"]
    assert coded_memory["sections"][".wv_pool"] == padded == manifest["ram"]["pool"]
    assert float_memory["sections"][".wv_pool"] == n_pages * 96 * 4
    saved = n_pages * 96 * 4 - padded
    assert float_memory["ram_bytes"] - coded_memory["ram_bytes"] == saved
    assert float_memory["flash_bytes"] - coded_memory["flash_bytes"] == saved - 4 * (1 << width)


@needs_arm
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_the_fpus_half_conversion_decodes_every_basis_exactly(target, tmp_path):
    """On the MCU the float16 bases are widened by the FPU (vcvtb), on the host by rebiasing
    bits: the echo tasks on random coded pages (a subnormal and a negative zero basis value
    among them) return the plan's weights bit for bit on QEMU."""
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = coded_plan(tasks, 96)
    mcu.generate_project(tasks, plan, str(tmp_path), target=target, check_fit=False)
    sequence = ["a", "b", "a"]
    ones = [(n, [np.ones(s, np.float32) for s in SHAPES[n]]) for n in sequence]
    mcu.write_requests(str(tmp_path), ones)
    run = mcu.run_project(str(tmp_path), timeout=60)
    for name, outputs in zip(sequence, run.outputs, strict=True):
        for out, (weight, value) in zip(outputs, plan.read(name).items(), strict=True):
            np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")


@needs_arm
def test_qemu_m7_matches_m4(coded):
    """The same project for Cortex-M7 (fpv5-d16, QEMU mps2-an500, the same memory map) computes
    the M4's outputs bit for bit."""
    plan, graphs, reference, projects = coded
    m4 = mcu.run_project(projects["m4"], timeout=60)
    m7 = mcu.run_project(projects["m7"], timeout=60)
    assert mcu.load_manifest(projects["m7"])["target"] == "cortex-m7"
    for on_m4, on_m7 in zip(m4.outputs, m7.outputs, strict=True):
        np.testing.assert_array_equal(on_m7[0], on_m4[0])
    assert [name for name, _ in m7.switch_instructions] == SEQUENCE


@needs_arm
def test_zero_copy_decodes_coded_pages_from_flash_per_call_bit_for_bit(coded):
    """Zero-copy with SmartDeal pages: no weight buffer and no codes in RAM; each weight is
    decoded from flash into the scratch before the call that reads it, with the switch's
    arithmetic, so the outputs equal the materialized M4 build's bit for bit; the switch only
    picks the task (<= 2 ticks)."""
    plan, graphs, reference, projects = coded
    manifest = mcu.load_manifest(projects["zero_copy_flash"])
    ram, flash = manifest["data_bytes"]["ram"], manifest["data_bytes"]["flash"]
    assert "weight_buffer" not in ram and "pages" not in ram
    # codes + bases (padded to a word where the page count is odd), no exclusive pages here
    assert flash["pages"] == plan.pool_bytes + 2 * (plan.n_pool_pages % 2)
    assert mcu.memory_report(projects["zero_copy_flash"])["sections"].get(".wv_pool", 0) == 0
    materialized = mcu.run_project(projects["m4"], timeout=60)
    zero_copy = mcu.run_project(projects["zero_copy_flash"], timeout=60)
    for a, b in zip(materialized.outputs, zero_copy.outputs, strict=True):
        np.testing.assert_array_equal(b[0], a[0])
    assert all(n <= 2 * mcu.INSTRUCTIONS_PER_TICK for _, n in zero_copy.switch_instructions)


@needs_arm
@needs_gcc
def test_coded_exclusive_pages_are_decoded_from_flash_as_tvm_llvm_does(
    coded, suite_tasks, tmp_path
):
    """Coded exclusive pages (digits' first two pages, iris' last: codes in the pool's format,
    other bases than the pool pages they replace) sit in flash as codes and bases, their stored
    bytes with each task's bases padded to a word, as the manifest counts them, and the switch
    decodes them: outputs equal llvm's (<= 1e-5), bit for
    bit between host and M4."""
    plan, graphs, _, _ = coded
    tasks, (_, _, inputs) = dict(plan.tasks), suite_tasks
    for name, slots in [("digits", [0, 1]), ("iris", [-1])]:
        t = tasks[name]
        table = t.page_table.copy()
        ids = table[slots]
        table[slots] = plan.n_pool_pages + np.arange(len(slots))
        exclusive = CodedPages(
            plan.coded.codes[ids], -0.5 * plan.coded.bases[ids], plan.coded.format
        )
        tasks[name] = TaskPages(t.layout, table, coded=exclusive)
    mixed = wv.PagePlan.from_coded(plan.page_size, plan.coded, tasks)
    runtime = MultitaskRuntime(mixed, wv.build(wv.lower(graphs, mixed)))
    reference = [runtime.run(name, inputs[name])[0] for name in SEQUENCE]
    mcu.generate_project(graphs, mixed, str(tmp_path))
    mcu.write_requests(str(tmp_path), [(n, [inputs[n]]) for n in SEQUENCE])
    page_bytes = plan.coded.format.page_bytes(plan.page_size)
    assert mixed.exclusive_bytes == 3 * page_bytes
    # in C, iris' one basis (18 B) is padded to a 4-byte boundary
    section = mcu.memory_report(str(tmp_path))["sections"][".wv_exclusive"]
    assert section == 3 * page_bytes + 2
    assert section == mcu.load_manifest(str(tmp_path))["data_bytes"]["flash"]["exclusive"]
    host = mcu.run_project(str(tmp_path), host=True)
    qemu = mcu.run_project(str(tmp_path), timeout=60)
    assert _max_err(host, reference) <= 1e-5 and _max_err(qemu, reference) <= 1e-5
    for on_host, on_m4 in zip(host.outputs, qemu.outputs, strict=True):
        np.testing.assert_array_equal(on_m4[0], on_host[0])


# **** zero-copy ****


@pytest.fixture(scope="module")
def zero_copy(suite_tasks, tmp_path_factory):
    """The four tasks separated under the 96 KiB budget with a page-aligned layout (no
    retraining), the llvm reference over ZERO_COPY_SEQUENCE, and C projects: materialized on
    M4, zero-copy with the pages in flash on M4 and M7, and with the pages in RAM on M4."""
    tasks, graphs, inputs = suite_tasks
    config = PackConfig(
        page_size=ZERO_COPY_PAGE_SIZE,
        page_aligned=True,
        separation=SeparationConfig(l1_budget_bytes=L1_BUDGET),
        optimize=OptimizeConfig(rounds=0),
    )
    plan = pack(*suite.packable(tasks), config).plan
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in ZERO_COPY_SEQUENCE]
    folder = tmp_path_factory.mktemp("cortexm-zero-copy")
    projects = {}
    for kind, target, options in [
        ("materialized", "cortex-m4", {}),
        ("flash_m4", "cortex-m4", {"zero_copy": True, "pool_in": "flash"}),
        ("flash_m7", "cortex-m7", {"zero_copy": True, "pool_in": "flash"}),
        ("ram_m4", "cortex-m4", {"zero_copy": True}),
    ]:
        projects[kind] = str(folder / kind)
        mcu.generate_project(graphs, plan, projects[kind], target=target, **options)
        mcu.write_requests(projects[kind], [(n, [inputs[n]]) for n in ZERO_COPY_SEQUENCE])
    return plan, reference, projects


@needs_arm
def test_zero_copy_on_m4_and_m7_computes_the_materialized_outputs_bit_for_bit(zero_copy):
    """The kernels read the same weights from the same pages, in the same order of sums."""
    plan, reference, projects = zero_copy
    assert plan.exclusive_bytes > 0  # exclusive pages are read in place too
    runs = {kind: mcu.run_project(path, timeout=120) for kind, path in projects.items()}
    for kind, run in runs.items():
        assert [name for name, _ in run.run_instructions] == ZERO_COPY_SEQUENCE, kind
        assert _max_err(run, reference) <= 1e-5, kind
        for ours, materialized in zip(run.outputs, runs["materialized"].outputs, strict=True):
            np.testing.assert_array_equal(ours[0], materialized[0], err_msg=kind)


@needs_arm
def test_zero_copy_switch_is_the_same_few_instructions_for_every_task(zero_copy):
    """A zero-copy switch only picks the task: a few instructions whatever the task's size (at
    most two SysTick ticks, the counter's resolution) and under 1 % of the smallest inference,
    where a materialized switch grows with the task's pages."""
    plan, reference, projects = zero_copy
    run = mcu.run_project(projects["flash_m4"], timeout=120)
    switches = [n for _, n in run.switch_instructions]
    assert len(switches) == len(ZERO_COPY_SEQUENCE)
    assert max(switches) <= 2 * mcu.INSTRUCTIONS_PER_TICK
    assert max(switches) <= 0.01 * min(n for _, n in run.run_instructions)
    materialized = dict(mcu.run_project(projects["materialized"], timeout=120).switch_instructions)
    assert materialized["digits"] > 50 * max(switches)


@needs_arm
def test_zero_copy_pages_sit_in_flash_or_ram_as_asked(zero_copy):
    """Pages in flash: no pool or weight buffer in RAM. Pages in RAM: the pool and the
    exclusive pages, exactly, in `.wv_pool`. Neither has a weight buffer, only a scratch."""
    plan, reference, projects = zero_copy
    n_exclusive = sum(t.n_exclusive_pages for t in plan.tasks.values())
    pages_bytes = (plan.n_pool_pages + n_exclusive) * plan.page_size * 4
    flash = mcu.memory_report(projects["flash_m4"])
    ram = mcu.memory_report(projects["ram_m4"])
    materialized = mcu.memory_report(projects["materialized"])
    for report in (flash, ram):
        assert report["sections"].get(".wv_weights", 0) == 0
    assert flash["sections"].get(".wv_pool", 0) == 0
    assert ram["sections"][".wv_pool"] == pages_bytes
    weight_buffer = materialized["sections"][".wv_weights"]
    assert weight_buffer == max(t.layout.n_pages for t in plan.tasks.values()) * 128 * 4
    assert ram["ram_bytes"] - flash["ram_bytes"] == pages_bytes
    # instead of a weight buffer, a scratch that weights read many times (convolutions) are
    # copied into before each call, beside the arena
    scratch = mcu.load_manifest(projects["flash_m4"])["data_bytes"]["ram"]["scratch"]
    assert 0 < scratch < weight_buffer
    assert flash["sections"][".wv_arena"] - materialized["sections"][".wv_arena"] == scratch


@needs_arm
def test_ten_task_suite_fits_256k_ram_zero_copy_where_separate_does_not(tmp_path):
    """The 10-task suite (mnist included) packed page-aligned and built zero-copy with its
    pages in flash: RAM holds activations only and fits 256 KB; flash holds every page and
    fits 1 MB. Built separately, its weights alone pass 256 KB RAM. Bytes depend on the
    architectures alone: the models keep their seeded initial weights (no training)."""
    torch.manual_seed(0)
    tasks = [
        suite.SuiteTask(n, suite.SPECS[n].make_model().eval(), suite.load_splits(n))
        for n in suite.TEN_TASKS
    ]
    graphs = [t.task for t in tasks]
    config = PackConfig(
        page_size=ZERO_COPY_PAGE_SIZE, page_aligned=True, optimize=OptimizeConfig(rounds=0)
    )
    plan = pack(*suite.packable(tasks), config).plan
    part = mcu.TARGETS["cortex-m4"]
    manifest = mcu.generate_project(
        graphs, plan, str(tmp_path / "zero_copy"), zero_copy=True, pool_in="flash"
    )
    data = manifest["data_bytes"]
    assert data["flash"]["pages"] == plan.n_pool_pages * ZERO_COPY_PAGE_SIZE * 4
    assert data["flash"]["page_tables"] == 2 * sum(t.layout.n_pages for t in plan.tasks.values())
    assert set(data["ram"]) == {"arena", "workspace", "stack", "scratch"}
    memory = mcu.memory_report(str(tmp_path / "zero_copy"))
    assert memory["ram_bytes"] <= part.ram_bytes and memory["flash_bytes"] <= part.flash_bytes
    dense = sum(t.layout.n_elems * 4 for t in plan.tasks.values())
    assert dense > part.ram_bytes  # the separate build's weights alone
    with pytest.raises(ValueError, match=rf"dense_weights {dense}\) > 262144 B"):
        mcu.generate_project(graphs, plan, str(tmp_path / "separate"), packed=False)


def test_a_second_board_is_a_new_entry(tmp_path):
    """What knows the board (compiler, emulator, memory map, startup file) is data: a part
    described by a new McuTarget gets its own Makefile and linker script, and the project
    records it for building, running and measuring."""
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = shared_plan(tasks, 100)
    board = mcu.McuTarget(
        "riscv-demo",
        "-march=rv32imac -mabi=ilp32",
        "virt",
        toolchain="riscv64-unknown-elf-",
        qemu="qemu-system-riscv32",
        flash_origin=0x20000000,
        ram_origin=0x80000000,
    )
    manifest = mcu.generate_project(tasks, plan, str(tmp_path), target=board, check_fit=False)
    assert mcu.McuTarget(**{**manifest["board"], "packages": tuple(board.packages)}) == board
    makefile = (tmp_path / "Makefile").read_text()
    assert "CC = riscv64-unknown-elf-gcc" in makefile
    assert "qemu-system-riscv32 -M virt" in makefile
    link = (tmp_path / "link.ld").read_text()
    assert "ORIGIN = 0x20000000" in link and "ORIGIN = 0x80000000" in link
