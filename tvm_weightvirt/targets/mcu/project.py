"""A page plan's tasks as a self-contained C project: TVM's C kernels, a generated executor per
task, the weights (pool, page tables, exclusive pages), the `wv_runtime` switch code, startup
code, linker script and Makefile."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import os
import re
import shutil
import string
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import dlight as dl

from ...abi import task_function
from ...coded_pages import CodedPages
from ...compile.cpu_schedule import MCU_RULES
from ...compile.native_log import TAKE_FAST_MODE, without_native_lines
from ...frontend.task import Task
from ...passes import MergeTasks, ReadWeightsThroughPages
from ...plan import PagePlan
from . import c_math  # noqa: F401  (registers libm calls for the C codegen)
from .boards import STACK_BYTES, TARGETS, McuTarget
from .executor import (
    KERNEL_PIPELINE,
    Tensor,
    ZeroCopyReads,
    exclusive_file_offsets,
    executor_c,
    task_executor,
)
from .firmware_library import CMAKE_LISTS, firmware_files
from .templates import c_float16_bits, c_floats, c_ints, render

EXCLUSIVE_FILE = "exclusive_pages.bin"  # for a firmware that reads exclusive pages itself
C_TARGET = tvm.target.Target({"kind": "c"})
MARKER = "wvirt-mcu.json"  # what makes a folder a `wvirt build --target cortex-m*` project
RUNTIME_DIR = str(importlib.resources.files("tvm_weightvirt.runtime") / "mcu")
# The TVM and tvm-ffi headers the kernels include, copied so the project builds on its own.
HEADERS = (
    "dlpack/dlpack.h",
    "tvm/ffi/c_api.h",
    "tvm/ffi/extra/c_env_api.h",
    "tvm/runtime/base.h",
    "tvm/runtime/c_backend_api.h",
)
RUNTIME_FILES = (
    "wv_runtime.h",
    "wv_runtime.c",
    "wv_requests.h",
    "main.c",
    "host.c",
    CMAKE_LISTS,  # the project as a firmware's static library (firmware_library.py)
)


def generate_project(
    tasks: Sequence[Task],
    plan: PagePlan,
    out_dir: str,
    target: str | McuTarget = "cortex-m4",
    packed: bool = True,
    check_fit: bool = True,
    zero_copy: bool = False,
    pool_in: str = "ram",
) -> dict:
    """Write a self-contained C project for `tasks` under `plan` to `out_dir`; returns its
    manifest (also in `out_dir/wvirt-mcu.json`) with the data bytes it needs.

    packed: the pool in RAM, exclusive pages in flash, one weight buffer the switch gathers
    into (materialize mode); a SmartDeal-coded pool (`plan.coded`) stays coded in RAM, codes
    packed in its format (32 // width to a word) and 3x3 float16 bases (format.row_bytes(P) +
    18 B per page), and the switch decodes it. Not packed: every
    task's weights resident in RAM, as when the tasks are built separately.

    zero_copy: no weight buffer; the kernels read each weight from its pages in place through
    the task's page table (`ReadWeightsThroughPages`), so a switch only picks the task; a
    kernel that reads each weight element many times (a convolution) gets that weight copied
    from its pages into a small scratch before each call instead (`ZeroCopyReads`). SmartDeal
    pages cannot be read in place: every weight is decoded into the scratch before its call. The
    plan must be page-aligned (`PackConfig(page_aligned=True)`, `--page-aligned`). The pages
    (pool, then every task's exclusive pages) sit in one array, in RAM (`pool_in="ram"`, its
    image in flash) or read in place from flash (`pool_in="flash"`, RAM holds activations
    only). With `check_fit`, a project whose data does not fit the part's RAM or flash raises
    ValueError with the numbers.
    """
    target = TARGETS[target] if isinstance(target, str) else target
    names = [t.name for t in tasks]
    if sorted(names) != sorted(plan.tasks):
        raise ValueError(f"tasks {sorted(names)} do not match the page plan's {sorted(plan.tasks)}")
    if pool_in not in ("ram", "flash"):
        raise ValueError(f"pool_in must be 'ram' or 'flash', got {pool_in!r}")
    if zero_copy:
        _check_zero_copy(plan, names, packed)
    elif pool_in != "ram":
        raise ValueError("pool_in='flash' reads pages in place: it needs zero_copy=True")
    # Step 1. Kernels: legalized and fused per task, identical ones once (MergeTasks); one
    # executor per task, intermediates in one arena sized for the largest.
    with without_native_lines(TAKE_FAST_MODE):
        merged = MergeTasks({t.name: KERNEL_PIPELINE(t.mod) for t in tasks})(tvm.IRModule())
    merged = relax.transform.AttachGlobalSymbol()(merged)
    executors = {n: task_executor(n, merged[task_function(n)]) for n in names}
    kernels = tvm.IRModule(
        {gv: f for gv, f in merged.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    )
    with C_TARGET:  # sums in registers, epilogues fused (cpu_schedule.ScalarAccumulators)
        kernels = dl.ApplyDefaultSchedule(*MCU_RULES)(kernels)
    reads = None
    if zero_copy:  # weights read through page tables, or gathered into a scratch per call
        reads = ZeroCopyReads.choose(executors.values(), kernels, plan)
        uses = reads.uses(executors.values())
        kernels = ReadWeightsThroughPages(plan.page_size, reads.n_page_elems, uses)(kernels)
    # Step 2. The kernels' C.
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        kernel_source = _c_float_literals(tvm.tirx.build(kernels, target=C_TARGET).inspect_source())
    manifest = _manifest(
        target, plan, names, executors, packed, _workspace_bytes(kernel_source), reads, pool_in
    )
    problems = _misfits(manifest, target)
    if check_fit and problems:
        raise ValueError(
            f"the plan does not fit a {target.name} part ({target.ram_bytes} B RAM, "
            f"{target.flash_bytes} B flash): "
            + "; ".join(problems)
            + ". To fit, "
            + fit_advice(manifest, [p.split()[0] for p in problems])
        )
    # Step 3. The files: kernels, executors, weights, runtime, startup, linker script, Makefile;
    # wvirt.h, CMakeLists.txt and toolchain.cmake for a firmware that links the project.
    os.makedirs(os.path.join(out_dir, "include"), exist_ok=True)
    _write(out_dir, "kernels.c", kernel_source)
    _write(out_dir, "executor.c", executor_c(executors, plan, packed, reads, pool_in))
    if zero_copy:
        _write(out_dir, "weights.c", _zero_copy_weights_c(plan, names, manifest, pool_in))
    else:
        _write(out_dir, "weights.c", _weights_c(plan, names, manifest, packed))
        if packed:  # the same float32 exclusive pages, for a firmware that keeps them elsewhere
            _write_exclusive_file(out_dir, plan, names)
    for filename in (*RUNTIME_FILES, target.startup):
        shutil.copyfile(os.path.join(RUNTIME_DIR, filename), os.path.join(out_dir, filename))
    for filename in ("link.ld", "Makefile"):
        with open(os.path.join(RUNTIME_DIR, f"{filename}.in")) as f:
            text = string.Template(f.read()).substitute(
                machine=target.qemu_machine,
                part=target.name,
                cpu_flags=target.cpu_flags,
                stack_bytes=STACK_BYTES,
                qemu=target.qemu,
                qemu_flags=target.qemu_flags,
                toolchain=target.toolchain,
                startup=target.startup,
                flash_origin=hex(target.flash_origin),
                ram_origin=hex(target.ram_origin),
                # the part's memory, so that code, data and stack together are checked when
                # linking; without check_fit, the board's (QEMU runs what the part cannot hold)
                flash_bytes=target.flash_bytes if check_fit else target.board_bytes,
                ram_bytes=target.ram_bytes if check_fit else target.board_bytes,
            )
        _write(out_dir, filename, text)
    for header in HEADERS:
        dest = os.path.join(out_dir, "include", header)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(_find_header(header), dest)
    for filename, text in firmware_files(target, manifest["tasks"]).items():
        _write(out_dir, filename, text)
    with open(os.path.join(out_dir, MARKER), "w") as f:
        json.dump(manifest, f, indent=1)
    rng = np.random.default_rng(0)
    write_requests(
        out_dir,
        [
            (n, [rng.normal(size=s).astype(d) for s, d in manifest["tasks"][n]["inputs"]])
            for n in names
        ],
    )
    return manifest


def _check_zero_copy(plan: PagePlan, names: list[str], packed: bool) -> None:
    if not packed:
        raise ValueError("zero_copy reads the pages of a packed build: build with packed=True")
    for n in names:
        layout = plan.task(n).layout
        unaligned = [s.name for s in layout.spans if s.offset_elems % plan.page_size]
        if unaligned:
            more = f" (and {len(unaligned) - 1} more)" if len(unaligned) > 1 else ""
            raise ValueError(
                f"task '{n}': weight '{unaligned[0]}'{more} does not start on a page of "
                f"{plan.page_size}; zero-copy kernels need a page-aligned layout: pack with "
                "`--page-aligned` (PackConfig(page_aligned=True))"
            )


def _manifest(target, plan, names, executors, packed, workspace_bytes, reads, pool_in) -> dict:
    arena_bytes = max(e.arena_bytes for e in executors.values())
    max_pages = max(plan.task(n).layout.n_pages for n in names)
    data_ram = {
        "arena": arena_bytes,
        "workspace": workspace_bytes,
        "stack": STACK_BYTES,
    }
    data_flash = {
        "constants": sum(
            4 * len(e.constant_words(k))
            for e in executors.values()
            for k in range(len(e.constants))
        )
    }
    coded = packed and plan.coded is not None
    if reads is not None:
        data_ram["scratch"] = reads.scratch_elems(executors.values()) * 4
        pages_bytes = reads.n_page_elems * 4
        if plan.coded is not None:  # codes and bases, decoded into the scratch per call
            pages_bytes = _c_array_bytes(plan.stacked_coded(names))
            data_flash["code_values"] = (1 << plan.coded.format.width) * 4
        if pool_in == "ram":
            data_ram["pages"] = data_flash["pages_image"] = pages_bytes
        else:
            data_flash["pages"] = pages_bytes
        data_flash["page_tables"] = sum(plan.task(n).layout.n_pages * 2 for n in names)
    elif packed:
        pool_bytes = _c_array_bytes(plan.coded) if coded else plan.pool_bytes
        data_ram["pool"] = data_flash["pool_image"] = pool_bytes
        if coded:
            data_flash["code_values"] = (1 << plan.coded.format.width) * 4
        data_ram["weight_buffer"] = max_pages * plan.page_size * 4
        data_flash["exclusive"] = sum(
            t.exclusive_bytes if t.coded is None else _c_array_bytes(t.coded)
            for t in map(plan.task, names)
        )
        data_flash["page_tables"] = sum(plan.task(n).layout.n_pages * 2 for n in names)
    else:
        dense = sum(plan.task(n).layout.n_elems * 4 for n in names)
        data_ram["dense_weights"] = data_flash["dense_weights_image"] = dense
    return {
        "target": target.name,
        "board": dataclasses.asdict(target),  # how toolchain builds, runs and measures it
        "packed": packed,
        "coded": coded,
        "zero_copy": reads is not None,
        "pool_in": pool_in,
        "page_size": plan.page_size,
        "page_aligned": all(plan.task(n).layout.page_aligned for n in names),
        "tasks": {
            n: {
                "inputs": [_spec(e.tensors[i]) for i in e.of_kind("input")],
                "outputs": [_spec(e.tensors[i]) for i in e.of_kind("output")],
                "kernel_calls": len(e.calls),
            }
            for n, e in executors.items()
        },
        "data_bytes": {"ram": data_ram, "flash": data_flash},
    }


def _c_array_bytes(coded: CodedPages) -> int:
    """Coded pages as their C arrays take them: the packed code words, then the float16 bases
    (`uint16_t`) padded to a 4-byte boundary, where the next array (4-aligned) or the end of the
    pool's word-wise copy at reset falls."""
    codes = coded.stored_bytes - coded.bases.nbytes
    return codes + 4 * math.ceil(coded.bases.nbytes / 4)


def _spec(t: Tensor) -> list:
    return [list(t.shape), t.dtype]


def _misfits(manifest: dict, target: McuTarget) -> list[str]:
    out = []
    for memory, budget in (("ram", target.ram_bytes), ("flash", target.flash_bytes)):
        parts = manifest["data_bytes"][memory]
        total = sum(parts.values())
        if total > budget:
            detail = " + ".join(f"{k} {v}" for k, v in parts.items())
            code = " before code" if memory == "flash" else ""
            out.append(f"{memory.upper()} needs {total} B{code} ({detail}) > {budget} B")
    return out


def fit_advice(manifest: dict, regions: list[str]) -> str:
    """The options that take the most off the project's `regions` ("RAM", "FLASH") that do not
    fit the part."""
    ways = []
    if "RAM" in regions and not (manifest["zero_copy"] and manifest["pool_in"] == "flash"):
        ways.append(
            "read the pages in place from flash, RAM holding activations only: "
            + ("" if manifest["page_aligned"] else "pack with `--page-aligned`, then ")
            + "`wvirt build --zero-copy flash` (generate_project(zero_copy=True, "
            'pool_in="flash"))'
        )
    if not manifest["zero_copy"]:
        ways.append(
            "pack for the part: a level-1 budget keeps the pool in RAM and the rest in flash "
            "(`wvirt pack ... --l1-budget 96KiB`)"
        )
    return "; or ".join(ways + ["pack fewer or smaller tasks"])


def _c_float_literals(kernel_source: str) -> str:
    """TVM's C codegen prints an infinite or NaN float32 constant as `inff` / `nanf` (max
    pooling starts from `-inff`), which no C compiler knows: math.h's `INFINITY` / `NAN`."""
    return re.sub(
        r"\b(inf|nan)f\b", lambda m: "INFINITY" if m[1] == "inf" else "NAN", kernel_source
    )


def _workspace_bytes(kernel_source: str) -> int:
    """The most workspace one kernel allocates (its temporaries, each 16-byte aligned)."""
    per_kernel = [
        sum(
            -(-int(n) // 16) * 16
            for n in re.findall(
                r"TVMBackendAllocWorkspace\([^,]+, [^,]+, \(uint64_t\)(\d+)ULL", body
            )
        )
        for body in kernel_source.split("__tvm_ffi_")
    ]
    assert kernel_source.count("TVMBackendAllocWorkspace(") == len(
        re.findall(r"TVMBackendAllocWorkspace\([^,]+, [^,]+, \(uint64_t\)\d+ULL", kernel_source)
    ), "a kernel allocates a workspace of dynamic size"
    return max(16, *per_kernel)


# wv_memory's pool fields when there is no pool of that kind
_NO_POOL = dict(
    pool="NULL", codes="NULL", bases="NULL", code_values="NULL", code_bits=0, code_row_words=0
)


def _weights_c(plan: PagePlan, names: list[str], manifest: dict, packed: bool) -> str:
    ram = manifest["data_bytes"]["ram"]
    what = "every task's weights in RAM"
    if packed:
        what = "pool in RAM, exclusive pages in flash"
        if plan.coded is not None:
            what = (
                "SmartDeal-coded pool in RAM, exclusive pages coded in flash, decoded at a switch"
            )
    lines = [render("weights_head", what=what)]
    if packed:
        if max(plan.n_pool_pages + t.n_exclusive_pages for t in plan.tasks.values()) > 0xFFFF:
            raise ValueError("page ids do not fit the MCU's uint16 page tables (> 65535 pages)")
        if plan.coded is None:
            lines.append(render("pool", n=plan.pool.size, values=c_floats(plan.pool)))
            pool = dict(_NO_POOL, pool="wv_pool")
        else:
            coded_lines, pool = _coded_pages_c(plan.coded, "coded_pool")
            lines += coded_lines
        lines.append(render("weight_buffer", n=ram["weight_buffer"] // 4))
        for n in names:
            t = plan.task(n)
            ids = ", ".join(map(str, t.page_table.tolist()))
            lines.append(render("page_table", task=n, n=len(t.page_table), ids=ids))
            if t.n_exclusive_pages and t.coded is not None:
                codes, bases = t.coded.packed, t.coded.bases
                lines.append(
                    render(
                        "coded_exclusive",
                        task=n,
                        n_codes=codes.size,
                        codes=c_ints(codes),
                        n_bases=bases.size,
                        bases=c_float16_bits(bases),
                    )
                )
            elif t.n_exclusive_pages:
                lines.append(
                    render(
                        "exclusive",
                        task=n,
                        n=t.exclusive_pages.size,
                        values=c_floats(t.exclusive_pages),
                    )
                )
        memory = dict(pool, n_pool_pages=plan.n_pool_pages, weights="wv_weights")
    else:
        lines.append(render("no_weight_buffer"))
        for n in names:
            layout = plan.task(n).layout
            flat = layout.flatten(plan.read(n))[: layout.n_elems]
            lines.append(render("dense", task=n, n=flat.size, values=c_floats(flat)))
        memory = dict(_NO_POOL, n_pool_pages=0, weights="NULL")
    lines.append(render("arena", arena_bytes=ram["arena"], workspace_bytes=ram["workspace"]))
    lines.append(render("memory", page_size=plan.page_size, **memory))
    return "\n".join(lines) + "\n"


def _coded_pages_c(coded: CodedPages, template: str) -> tuple[list[str], dict]:
    """SmartDeal pages in C: packed codes and bases (placed as `template` says), the value of
    each code, and the `wv_memory` fields that point at them."""
    packed, bases, fmt = coded.packed, coded.bases, coded.format
    values = fmt.values()
    lines = [
        render(
            template,
            n_codes=packed.size,
            codes=c_ints(packed),
            n_bases=bases.size,
            bases=c_float16_bits(bases),
        ),
        render("code_values", n=values.size, values=c_floats(values)),
    ]
    fields = dict(
        _NO_POOL,
        codes="wv_codes",
        bases="wv_bases",
        code_values="wv_code_values",
        code_bits=fmt.width,
        code_row_words=packed.shape[1],
    )
    return lines, fields


def _zero_copy_weights_c(plan: PagePlan, names: list[str], manifest: dict, pool_in: str) -> str:
    """Every page in one array (the pool, then each task's exclusive pages in `names` order),
    and page tables of ids into it."""
    pages, tables = plan.stacked_pages(names)
    if len(pages) > 0xFFFF:
        raise ValueError("page ids do not fit the MCU's uint16 page tables (> 65535 pages)")
    if plan.coded is None:
        what = f"every page read in place from {pool_in.upper()}"
        lines = [render("weights_head", what=what)]
        lines.append(render(f"pages_{pool_in}", n=pages.size, values=c_floats(pages)))
        memory = dict(_NO_POOL, pool="wv_pages")
    else:
        what = f"SmartDeal pages in {pool_in.upper()}, decoded into a scratch per kernel call"
        lines = [render("weights_head", what=what)]
        template = "coded_pool" if pool_in == "ram" else "coded_pages_flash"
        coded_lines, memory = _coded_pages_c(plan.stacked_coded(names), template)
        lines += coded_lines
    lines.append(render("no_weight_buffer"))
    for n, table in zip(names, tables):
        ids = ", ".join(map(str, table.tolist()))
        lines.append(render("page_table", task=n, n=len(table), ids=ids))
    ram = manifest["data_bytes"]["ram"]
    lines.append(render("arena", arena_bytes=ram["arena"], workspace_bytes=ram["workspace"]))
    lines.append(render("scratch", n=ram["scratch"] // 4))
    memory |= dict(n_pool_pages=len(pages), weights="NULL")
    lines.append(render("memory", page_size=plan.page_size, **memory))
    return "\n".join(lines) + "\n"


def write_requests(out_dir: str, requests: Sequence[tuple[str, Sequence[np.ndarray]]]) -> None:
    """Write `requests.c`: the (task, inputs) list that main.c serves in order."""
    manifest = load_manifest(out_dir)
    names = list(manifest["tasks"])
    lines = [render("requests_head")]
    for r, (task, inputs) in enumerate(requests):
        if task not in manifest["tasks"]:
            raise ValueError(f"no task '{task}' in the project '{out_dir}' (has {names})")
        expected = [(tuple(s), d) for s, d in manifest["tasks"][task]["inputs"]]
        found = [(tuple(x.shape), str(x.dtype)) for x in inputs]
        if found != expected:
            raise ValueError(f"task '{task}': request {r} has inputs {found}, expected {expected}")
        for k, x in enumerate(inputs):
            lines.append(render("input", r=r, k=k, n=x.size, values=c_floats(x)))
        items = ", ".join(f"(void*)request{r}_input{k}" for k in range(len(inputs)))
        lines.append(render("inputs", r=r, items=items))
    for task, spec in manifest["tasks"].items():
        sizes = [math.prod(s) for s, _ in spec["outputs"]]
        lines += [render("output", task=task, k=k, n=n) for k, n in enumerate(sizes)]
        items = ", ".join(f"{task}_output{k}" for k in range(len(sizes)))
        lines.append(render("outputs", task=task, items=items, words=", ".join(map(str, sizes))))
    lines.append(render("requests_head_table"))
    for r, (task, _) in enumerate(requests):
        n_out = len(manifest["tasks"][task]["outputs"])
        lines.append(render("request", task_index=names.index(task), r=r, task=task, n=n_out))
    lines.append(render("requests_tail", n=len(requests)))
    _write(out_dir, "requests.c", "\n".join(lines) + "\n")


def _write_exclusive_file(out_dir: str, plan: PagePlan, names: list[str]) -> None:
    """`exclusive_pages.bin`: the float32 exclusive pages of every task that has them, at the
    offsets `exclusive_file_offsets` gives (little-endian float32, as in flash)."""
    offsets = exclusive_file_offsets(plan, names)
    if not offsets:
        return
    with open(os.path.join(out_dir, EXCLUSIVE_FILE), "wb") as f:
        for name in offsets:
            f.write(plan.task(name).exclusive_pages.astype("<f4").tobytes())


def _write(out_dir: str, filename: str, text: str) -> None:
    with open(os.path.join(out_dir, filename), "w") as f:
        f.write(text)


def _find_header(header: str) -> str:
    import tvm_ffi

    roots = [
        os.path.join(os.path.dirname(tvm.__file__), "include"),
        os.path.join(os.path.dirname(tvm_ffi.__file__), "include"),
    ]
    for root in roots:
        if os.path.isfile(os.path.join(root, header)):
            return os.path.join(root, header)
    raise FileNotFoundError(f"header '{header}' not found under {roots}")


def load_manifest(out_dir: str) -> dict:
    path = os.path.join(out_dir, MARKER)
    if not os.path.isfile(path):
        raise ValueError(
            f"'{out_dir}' holds no {MARKER}: not a `wvirt build --target cortex-m*` folder"
        )
    with open(path) as f:
        return json.load(f)


def is_project(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))
