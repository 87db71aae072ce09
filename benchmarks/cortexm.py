"""Cortex-M deployment of four suite tasks separated under a 96 KiB level-1 budget: RAM and flash
(arm-none-eabi-size) packed vs. the same tasks built separately, fit in a 256 KB RAM + 1 MB flash
part, outputs on QEMU vs. TVM's llvm build, instructions per inference and per switch. `coded`:
the same tasks packed with SmartDeal pages (NWV pool, page size 96, page-aligned), the pool
coded in RAM and decoded at each switch, beside the same plan with its pool as float32 pages
(plain gather) and zero-copy builds that decode each weight before every call that reads it.
`zero_copy`: the 10-task suite packed with a page-aligned layout (no retraining: the numbers are
about the deployment), built materialized, zero-copy with the pages in RAM, zero-copy with the
pages in flash, and separately: RAM and flash, instructions per switch and per inference, the
switch as a fraction of an inference, and the padding the page-aligned layout costs.
`--int8`: instead of all that, each task quantized to int8 (`quantize_int8`, calibrated on its
training split), built alone on M4 and M7: instructions per inference and per multiply-add
(vs. CMSIS-NN's), weight and RAM bytes, test accuracy vs. the float32 model, QEMU vs. the host's
int8 build; and the tasks in one project with a 64 KB-RAM part's budget."""

from __future__ import annotations

import dataclasses
import tempfile

import numpy as np
from tvm_weightvirt.runtime import MultitaskRuntime
from tvm_weightvirt.runtime.standalone import StandaloneModel

from benchmarks._common import run
from benchmarks.real_size import multiply_adds
from tvm_weightvirt.algorithms.data import Split
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.separation import SeparationConfig
from tvm_weightvirt.apps import suite
from tvm_weightvirt.compile.compiler import build, lower
from tvm_weightvirt.frontend.int8 import quantize_int8
from tvm_weightvirt.frontend.packing import pack
from tvm_weightvirt.layout import PageLayout
from tvm_weightvirt.plan import PagePlan
from tvm_weightvirt.targets import mcu

TASKS = ["digits", "wine", "iris", "breast_cancer"]
L1_BUDGET = 96 * 1024  # pool + page tables in RAM; exclusive pages in flash
SEQUENCE = ["digits", "wine", "digits", "iris", "breast_cancer", "wine", "iris"]
CODED_PAGE_SIZE = 96  # SmartDeal pages hold rows of 3 coefficients
ZERO_COPY_PAGE_SIZE = 128  # rows of 128, 64 and 32 weights start on pages
# every task once, then back to the largest and smallest
ZERO_COPY_SEQUENCE = [*suite.TEN_TASKS, "mnist", "iris", "mnist"]
KERNEL_TASKS = ["digits", "mnist"]
SMALL_RAM_BYTES = 64 * 1024  # an STM32L4-class part
# Instructions per inference on QEMU mps2-an386 (-icount shift=0, SysTick x 40), gcc 12.2,
# -mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard, from the int8 issue: the same nets as
# plain float32 C loops (-O2 -ffp-contract=off, the project's flags) and as CMSIS-NN int8
# (per-channel, DSP/SMLAD, -O2).
ANCHORS = {
    "digits": {"plain_c_loop": 843_696, "cmsis_nn_int8": 285_756},
    "mnist": {"cmsis_nn_int8": 1_550_180},
}


def _medians(counts: list[tuple[str, int]]) -> dict[str, int]:
    per_task: dict[str, list[int]] = {}
    for name, n in counts:
        per_task.setdefault(name, []).append(n)
    return {name: int(np.median(v)) for name, v in per_task.items()}


def _max_err(run: mcu.McuRun, reference: list[np.ndarray]) -> float:
    return max(float(np.abs(o[0] - r).max()) for o, r in zip(run.outputs, reference))


def _coded(tasks, graphs, inputs, optimize: OptimizeConfig, folder: str) -> dict:
    """The tasks packed with SmartDeal pages (page-aligned) on M4: memory, QEMU vs. llvm,
    instructions per switch and per inference, built materialized (the switch decodes the
    task's pages into the weight buffer), materialized with the same pool as float32 pages (a
    plain gather), and zero-copy with the codes in RAM or flash (each weight decoded into a
    scratch before every kernel call that reads it)."""
    config = PackConfig(
        page_size=CODED_PAGE_SIZE, smartdeal=True, page_aligned=True, optimize=optimize
    )
    plan = pack(*suite.packable(tasks), config).plan
    runtime = MultitaskRuntime(plan, build(lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in SEQUENCE]
    part = mcu.TARGETS["cortex-m4"]
    numbers: dict = {"page_size": plan.page_size, "pool_pages": plan.n_pool_pages}
    float_pool = PagePlan(plan.page_size, plan.pool, plan.tasks)
    builds = {
        "coded": (plan, {}),
        "float_pool": (float_pool, {}),
        "coded_zero_copy_ram": (plan, {"zero_copy": True}),
        "coded_zero_copy_flash": (plan, {"zero_copy": True, "pool_in": "flash"}),
    }
    for kind, (kind_plan, options) in builds.items():
        out = f"{folder}/{kind}"
        mcu.generate_project(graphs, kind_plan, out, **options)
        mcu.write_requests(out, [(n, [inputs[n]]) for n in SEQUENCE])
        memory = mcu.memory_report(out)
        run = mcu.run_project(out, timeout=120)
        suffix = "" if kind == "coded" else f"_{kind.removeprefix('coded_')}"
        numbers |= {
            f"ram_bytes{suffix}": memory["ram_bytes"],
            f"flash_bytes{suffix}": memory["flash_bytes"],
            f"pool_bytes{suffix}": memory["sections"].get(".wv_pool", 0),
            f"fits_256k_ram{suffix}": memory["ram_bytes"] <= part.ram_bytes,
            f"max_abs_err_vs_llvm{suffix}": _max_err(run, reference),
            f"instr_per_switch{suffix}": _medians(run.switch_instructions),
            f"instr_per_inference{suffix}": _medians(run.run_instructions),
        }
    materialized = numbers["instr_per_inference"]
    for kind in ("zero_copy_ram", "zero_copy_flash"):
        numbers[f"inference_vs_materialized_{kind}"] = {
            n: v / materialized[n] for n, v in numbers[f"instr_per_inference_{kind}"].items()
        }
    return numbers


def _padding(plan: PagePlan) -> dict:
    """Pages and bytes the page-aligned layout adds to each task, and to the pool (which NWV
    sizes to the largest task), against the dense layout of the same weights."""
    pages = {}
    for name, task in plan.tasks.items():
        weights = {s.name: (s.shape, s.dtype) for s in task.layout.spans}
        dense = PageLayout.from_weights(weights, plan.page_size)
        pages[name] = task.layout.n_pages - dense.n_pages
    page_bytes = plan.page_size * 4
    largest = max(plan.tasks, key=lambda n: plan.task(n).layout.n_pages)
    return {
        "padding_pages": pages,
        "padding_bytes": sum(pages.values()) * page_bytes,
        "pool_padding_bytes": pages[largest] * page_bytes,
    }


def _zero_copy(folder: str) -> dict:
    """The 10-task suite, page-aligned: materialized vs. zero-copy (pages in RAM or flash) on
    QEMU M4, and the separate build's memory."""
    tasks = suite.load_suite(suite.TEN_TASKS)
    graphs = [t.task for t in tasks]
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    config = PackConfig(
        page_size=ZERO_COPY_PAGE_SIZE, page_aligned=True, optimize=OptimizeConfig(rounds=0)
    )
    plan = pack(*suite.packable(tasks), config).plan
    runtime = MultitaskRuntime(plan, build(lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in ZERO_COPY_SEQUENCE]
    part = mcu.TARGETS["cortex-m4"]
    numbers: dict = {"page_size": plan.page_size, "pool_pages": plan.n_pool_pages}
    numbers |= _padding(plan)
    builds = {
        "materialized": {},
        "zero_copy_ram": {"zero_copy": True},
        "zero_copy_flash": {"zero_copy": True, "pool_in": "flash"},
        "separate": {"packed": False},
    }
    per_build = ("ram_bytes", "flash_bytes", "fits_256k_ram", "fits_1m_flash", "max_abs_err")
    for key in (*per_build, "instr_per_switch", "instr_per_inference", "switch_fraction"):
        numbers[key] = {}
    for kind, options in builds.items():
        out = f"{folder}/{kind}"
        mcu.generate_project(graphs, plan, out, check_fit=False, **options)
        memory = mcu.memory_report(out)
        numbers["ram_bytes"][kind] = memory["ram_bytes"]
        numbers["flash_bytes"][kind] = memory["flash_bytes"]
        numbers["fits_256k_ram"][kind] = memory["ram_bytes"] <= part.ram_bytes
        numbers["fits_1m_flash"][kind] = memory["flash_bytes"] <= part.flash_bytes
        if kind == "separate":
            continue
        mcu.write_requests(out, [(n, [inputs[n]]) for n in ZERO_COPY_SEQUENCE])
        run = mcu.run_project(out, timeout=300)
        switch, inference = _medians(run.switch_instructions), _medians(run.run_instructions)
        numbers["instr_per_switch"][kind] = switch
        numbers["instr_per_inference"][kind] = inference
        numbers["switch_fraction"][kind] = {n: switch[n] / inference[n] for n in switch}
        numbers["max_abs_err"][kind] = _max_err(run, reference)
    materialized = numbers["instr_per_inference"]["materialized"]
    numbers["inference_vs_materialized"] = {
        kind: {n: v / materialized[n] for n, v in per_task.items()}
        for kind, per_task in numbers["instr_per_inference"].items()
    }
    return numbers


def _kernels(targets: list[str], folder: str) -> dict:
    """Each of KERNEL_TASKS built alone (lossless plan: the kernels, not the switch) on each
    target: instructions per inference and per multiply-add, and their ratio to ANCHORS."""
    numbers = {}
    for task in suite.load_suite(KERNEL_TASKS):
        macs = multiply_adds(task.task)
        plan = PagePlan.lossless([task.task], page_size=1024)
        row: dict = {"macs": macs}
        for target in targets:
            out = f"{folder}/{task.name}-{target}"
            mcu.generate_project([task.task], plan, out, target=target, check_fit=False)
            mcu.write_requests(out, [(task.name, [task.example_input().numpy()])] * 3)
            instructions = _medians(mcu.run_project(out, timeout=300).run_instructions)[task.name]
            suffix = "" if target == "cortex-m4" else f"_{target.replace('-', '_')}"
            row[f"instr_per_inference{suffix}"] = instructions
            row[f"instr_per_mac{suffix}"] = instructions / macs
        for anchor, instructions in ANCHORS.get(task.name, {}).items():
            row[f"vs_{anchor}"] = row["instr_per_inference"] / instructions
        numbers[task.name] = row
    return numbers


def _test_accuracy(model: StandaloneModel, split: Split) -> float:
    predicted = [model.run(split.x[i : i + 1])[0].argmax() for i in range(len(split.x))]
    return 100.0 * float(np.mean(np.array(predicted) == split.y))


def _int8(quick: bool, folder: str) -> dict:
    """Each task as int8 alone on each target, then all of them in one project on a part of
    SMALL_RAM_BYTES (its linker script checks code, data and stack together)."""
    targets = ["cortex-m4"] if quick else ["cortex-m4", "cortex-m7"]
    tasks = suite.load_suite(KERNEL_TASKS if quick else suite.TEN_TASKS)
    numbers: dict = {}
    quantized = []
    for task in tasks:
        q = quantize_int8(task.task, task.splits["train"].x)
        quantized.append(q)
        host, float_host = StandaloneModel(q), StandaloneModel(task.task)
        macs = multiply_adds(task.task)
        test = task.splits["test"]
        row: dict = {
            "macs": macs,
            "accuracy": _test_accuracy(host, test),
            "float_accuracy": _test_accuracy(float_host, test),
            "float_weight_bytes": 4 * task.task.n_weights,
        }
        row["accuracy_vs_float_pp"] = row["accuracy"] - row["float_accuracy"]
        real = suite.load_mnist_idx(suite.MNIST_TEST) if task.name == "mnist" else None
        if real is not None:  # the real 10,000-image test set, for evaluation only
            row["real_test_accuracy"] = _test_accuracy(host, real)
            row["real_test_float_accuracy"] = _test_accuracy(float_host, real)
        inputs = [task.splits["test"].x[i : i + 1] for i in range(3)]
        plan = PagePlan.lossless([q], page_size=1024)
        for target in targets:
            out = f"{folder}/{task.name}-{target}"
            manifest = mcu.generate_project([q], plan, out, target=target, check_fit=False)
            mcu.write_requests(out, [(task.name, [x]) for x in inputs])
            run = mcu.run_project(out, timeout=300)
            suffix = "" if target == "cortex-m4" else f"_{target.replace('-', '_')}"
            instructions = _medians(run.run_instructions)[task.name]
            row[f"instr_per_inference{suffix}"] = instructions
            row[f"instr_per_mac{suffix}"] = instructions / macs
            row["weight_bytes"] = manifest["data_bytes"]["flash"]["constants"]
            row[f"ram_bytes{suffix}"] = mcu.memory_report(out)["ram_bytes"]
            err = max(
                float(np.abs(o[0] - host.run(x)[0]).max()) for o, x in zip(run.outputs, inputs)
            )
            row["max_abs_err_vs_host"] = max(row.get("max_abs_err_vs_host", 0.0), err)
        if "cmsis_nn_int8" in ANCHORS.get(task.name, {}):
            row["vs_cmsis_nn_int8"] = (
                row["instr_per_inference"] / ANCHORS[task.name]["cmsis_nn_int8"]
            )
        numbers[task.name] = row
    small = dataclasses.replace(mcu.TARGETS["cortex-m4"], ram_bytes=SMALL_RAM_BYTES)
    out = f"{folder}/all-64k"
    mcu.generate_project(quantized, PagePlan.lossless(quantized, page_size=1024), out, target=small)
    memory = mcu.memory_report(out)  # links: code, data and stack fit the part
    numbers["one_project"] = {
        "tasks": [t.name for t in tasks],
        "ram_bytes": memory["ram_bytes"],
        "flash_bytes": memory["flash_bytes"],
        "part_ram_bytes": SMALL_RAM_BYTES,
    }
    return numbers


def measure(quick: bool, int8: bool = False) -> dict:
    if int8:
        numbers = {"int8": _int8(quick, tempfile.mkdtemp(prefix="wvirt-cortexm-int8-"))}
        for key, value in numbers["int8"].items():
            print(f"int8 {key}: {value}")
        return numbers
    tasks = suite.load_suite(TASKS)
    optimize = OptimizeConfig(rounds=0) if quick else OptimizeConfig(rounds=2, iterations=300)
    config = PackConfig(separation=SeparationConfig(l1_budget_bytes=L1_BUDGET), optimize=optimize)
    result = pack(*suite.packable(tasks), config)
    plan = result.plan
    graphs = [t.task for t in tasks]
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    runtime = MultitaskRuntime(plan, build(lower(graphs, plan)))
    reference = [runtime.run(name, inputs[name])[0] for name in SEQUENCE]

    folder = tempfile.mkdtemp(prefix="wvirt-cortexm-")
    numbers: dict = {"tasks": TASKS, "sequence": SEQUENCE, "l1_budget_bytes": L1_BUDGET}
    memory = {}
    for kind, packed in [("packed", True), ("separate", False)]:
        out = f"{folder}/{kind}"
        mcu.generate_project(graphs, plan, out, packed=packed, check_fit=False)
        memory[kind] = mcu.memory_report(out)
    part = mcu.TARGETS["cortex-m4"]
    numbers["ram_bytes"] = {k: m["ram_bytes"] for k, m in memory.items()}
    numbers["flash_bytes"] = {k: m["flash_bytes"] for k, m in memory.items()}
    numbers["fits_256k_ram"] = {k: m["ram_bytes"] <= part.ram_bytes for k, m in memory.items()}
    numbers["fits_1m_flash"] = {k: m["flash_bytes"] <= part.flash_bytes for k, m in memory.items()}
    numbers["sections"] = {k: m["sections"] for k, m in memory.items()}

    targets = ["cortex-m4"] if quick else ["cortex-m4", "cortex-m7"]
    numbers["max_abs_err_vs_host"] = 0.0
    for target in targets:
        out = f"{folder}/packed-{target}"
        mcu.generate_project(graphs, plan, out, target=target)
        mcu.write_requests(out, [(n, [inputs[n]]) for n in SEQUENCE])
        run = mcu.run_project(out, timeout=120)
        err = _max_err(run, reference)
        numbers["max_abs_err_vs_host"] = max(numbers["max_abs_err_vs_host"], err)
        suffix = "" if target == "cortex-m4" else f"_{target.replace('-', '_')}"
        numbers["instr_per_inference" + suffix] = _medians(run.run_instructions)
        numbers["instr_per_switch" + suffix] = _medians(run.switch_instructions)
    numbers["coded"] = _coded(tasks, graphs, inputs, optimize, f"{folder}/coded")
    numbers["zero_copy"] = _zero_copy(f"{folder}/zero_copy")
    numbers["kernels"] = _kernels(targets, f"{folder}/kernels")

    for key in ("ram_bytes", "flash_bytes", "fits_256k_ram"):
        print(f"{key}: {numbers[key]}")
    print(f"max |QEMU - llvm|: {numbers['max_abs_err_vs_host']:.3g}")
    for key in sorted(k for k in numbers if k.startswith("instr_per")):
        print(f"{key}: {numbers[key]}")
    print(f"coded: {numbers['coded']}")
    for key, value in numbers["zero_copy"].items():
        print(f"zero_copy {key}: {value}")
    for key, value in numbers["kernels"].items():
        print(f"kernels {key}: {value}")
    return numbers


if __name__ == "__main__":
    run(__doc__, measure, options={"--int8": {"action": "store_true", "help": "int8 builds"}})
