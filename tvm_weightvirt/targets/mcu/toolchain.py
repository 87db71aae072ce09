"""Build a project with make (its target's cross gcc, or the host's gcc), run it on QEMU or the
host, read back its outputs and instruction counts, and measure its sections."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from .boards import LOADED_RAM_SECTIONS, TARGETS, McuTarget
from .project import fit_advice, load_manifest


class McuRunError(RuntimeError):
    """The firmware faulted, hung, or printed something other than its protocol."""


class McuFitError(ValueError):
    """The firmware (code, data and stack) does not fit the part's RAM or flash."""


@dataclass
class McuRun:
    """What one run of the firmware printed: outputs per request, instructions (QEMU) per
    switch and per inference, in request order."""

    outputs: list[list[np.ndarray]]
    switch_instructions: list[tuple[str, int]]
    run_instructions: list[tuple[str, int]]


def missing_tools(host: bool = False, target: str = "cortex-m4") -> list[str]:
    tools = ["make", "gcc"] if host else ["make", *TARGETS[target].tools]
    return [t for t in tools if shutil.which(t) is None]


def _target(out_dir: str) -> McuTarget:
    board = load_manifest(out_dir)["board"]
    return McuTarget(**{**board, "packages": tuple(board["packages"])})


def compile_project(out_dir: str, host: bool = False) -> str:
    """`make` the firmware (app.elf) or the host program (app_host); returns its path."""
    target = _target(out_dir)
    missing = missing_tools(host, target.name)
    if missing:
        raise RuntimeError(
            f"missing {missing}: apt-get install -y --no-install-recommends "
            + " ".join(target.packages)
        )
    program = "app_host" if host else "app.elf"
    done = subprocess.run(["make", "-C", out_dir, program], capture_output=True, text=True)
    overflows = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", done.stderr)
    if done.returncode != 0 and overflows:
        budget = {"RAM": target.ram_bytes, "FLASH": target.flash_bytes}
        raise McuFitError(
            f"'{out_dir}': {program} does not fit the {target.name} part: "
            + "; ".join(
                f"{region} needs {int(n)} B more than its {budget.get(region, '?')} B"
                for region, n in dict(overflows).items()
            )
            + " (code, data and stack together; the project's data alone fit). To fit, "
            + fit_advice(load_manifest(out_dir), [region for region, _ in overflows])
        )
    if done.returncode != 0:
        raise RuntimeError(f"building {program} in '{out_dir}' failed:\n{done.stderr[-4000:]}")
    return os.path.join(out_dir, program)


def run_project(out_dir: str, host: bool = False, timeout: float = 60.0) -> McuRun:
    """Build and run the project's requests: on QEMU (`-icount shift=0`) or as a host program."""
    manifest, target = load_manifest(out_dir), _target(out_dir)
    program = compile_project(out_dir, host)
    if host:
        command = [os.path.abspath(program)]
    else:
        command = [target.qemu, "-M", target.qemu_machine, *target.qemu_flags.split()]
        command += ["-kernel", program]
    where = "host program" if host else f"QEMU {command[2]}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise McuRunError(f"{where}: no exit within {timeout} s (a hang?)") from err
    lines = done.stdout.splitlines()
    if done.returncode != 0 or "FAULT" in lines or lines[-1:] != ["done"]:
        tail = "\n".join(lines[-5:])
        raise McuRunError(f"{where}: exit code {done.returncode}, output ends with:\n{tail}")
    return _parse_run(lines, manifest, 0 if host else target.instructions_per_tick)


def _parse_run(lines: list[str], manifest: dict, per_tick: int) -> McuRun:
    run = McuRun([], [], [])
    for line in lines[:-1]:
        kind, *fields = line.split()
        if kind == "switch":
            run.switch_instructions.append((fields[0], int(fields[1]) * per_tick))
        elif kind == "run":
            run.run_instructions.append((fields[0], int(fields[1]) * per_tick))
            run.outputs.append([])
        else:
            k, words = int(fields[1]), np.array([int(w, 16) for w in fields[2:]], np.uint32)
            shape, dtype = manifest["tasks"][run.run_instructions[-1][0]]["outputs"][k]
            run.outputs[-1].append(words.view(dtype).reshape(shape))
    return run


def memory_report(out_dir: str) -> dict:
    """Bytes per section of app.elf (`<toolchain>size -A`), RAM and flash totals (a RAM
    section with initial values also takes its image's bytes in flash)."""
    target = _target(out_dir)
    elf = compile_project(out_dir)
    done = subprocess.run(
        [f"{target.toolchain}size", "-A", elf], capture_output=True, text=True, check=True
    )
    sections = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith(".") and fields[1].isdigit():
            sections[fields[0]] = (int(fields[1]), int(fields[2]))
    in_ram = range(target.ram_origin, target.ram_origin + target.board_bytes)
    in_flash = range(target.flash_origin, target.flash_origin + target.board_bytes)
    ram = sum(size for size, addr in sections.values() if addr in in_ram)
    flash = sum(
        size
        for name, (size, addr) in sections.items()
        if (addr in in_flash and (addr > 0 or name == ".vectors")) or name in LOADED_RAM_SECTIONS
    )
    return {
        "ram_bytes": ram,
        "flash_bytes": flash,
        "sections": {k: v[0] for k, v in sections.items()},
    }
