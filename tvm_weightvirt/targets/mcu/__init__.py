"""Cortex-M: a self-contained C project (TVM's C kernels, a static executor per task, the switch
runtime) per page plan, built with the Arm toolchain and run on QEMU or the host.

boards (the parts and the emulated boards) <- templates (C by kind of line) <- executor (one
task's kernel calls and arena) <- project (the files) <- toolchain (make, run, measure).
"""

from .boards import INSTRUCTIONS_PER_TICK, TARGETS, McuTarget
from .project import generate_project, is_project, load_manifest, write_requests
from .toolchain import (
    McuFitError,
    McuRun,
    McuRunError,
    compile_project,
    memory_report,
    missing_tools,
    run_project,
)

__all__ = [
    "INSTRUCTIONS_PER_TICK",
    "TARGETS",
    "McuFitError",
    "McuRun",
    "McuRunError",
    "McuTarget",
    "compile_project",
    "generate_project",
    "is_project",
    "load_manifest",
    "memory_report",
    "missing_tools",
    "run_project",
    "write_requests",
]
