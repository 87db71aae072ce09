"""Cortex-M: a self-contained C project (TVM's C kernels, a static executor per task, the switch
runtime) per page plan, built with the Arm toolchain and run on QEMU or the host.

boards (the parts and the emulated boards) <- templates (C by kind of line) <- executor (one
task's kernel calls and arena) <- project (the files) <- toolchain (make, run, measure).

The boards import without TVM (the CLI lists them); the names that need TVM load on first use.
"""

import importlib

from .boards import INSTRUCTIONS_PER_TICK, TARGETS, McuTarget

# Public names that need TVM: name -> module, imported on first access.
_LAZY = {
    "generate_project": "project",
    "is_project": "project",
    "load_manifest": "project",
    "write_requests": "project",
    "McuFitError": "toolchain",
    "McuRun": "toolchain",
    "McuRunError": "toolchain",
    "compile_project": "toolchain",
    "memory_report": "toolchain",
    "missing_tools": "toolchain",
    "run_project": "toolchain",
}

__all__ = ["INSTRUCTIONS_PER_TICK", "TARGETS", "McuTarget", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
