"""A compiled multitask library: what `build` returns, what `wvirt build` exports and what a
device loads. Loading needs only TVM's runtime (no compiler): a Jetson runs an exported folder
with `TVM_USE_RUNTIME_LIB=1`, or with a TVM built as runtime only."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import tvm

from ..abi import TASK_PREFIX
from ..coded_pages import CodeFormat


def _load_cuda_runtime() -> None:
    """TVM 0.27 with its runtime alone (`TVM_USE_RUNTIME_LIB=1`, or no compiler library) does
    not load its CUDA runtime library, which `import tvm` loads with the compiler: load it
    here, so that a device without TVM's compiler runs cuda libraries. Without a CUDA driver
    it does not load, and the CPU is all there is."""
    from tvm.base import _LOADED_LIBS, _RUNTIME_ONLY
    from tvm_ffi.libinfo import load_lib_ctypes

    if not _RUNTIME_ONLY or "tvm_runtime_cuda" in _LOADED_LIBS:
        return
    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            "tvm", "tvm_runtime_cuda", "RTLD_LOCAL", extra_lib_paths=[runtime_dir]
        )
    except (OSError, FileNotFoundError, RuntimeError):
        pass


_load_cuda_runtime()


@dataclass(frozen=True)
class TaskSignature:
    """What a compiled task function takes: its inputs and, per mode, its weights or pages."""

    inputs: tuple[tuple[tuple[int, ...], str], ...]
    weights: tuple[tuple[tuple[int, ...], str], ...]  # materialize mode
    n_pages: int | None  # fused mode: page table length
    pool_shape: tuple[int, int] | None  # fused mode: the pool the module was lowered for
    # its outputs, flattened as the runtimes return them (empty in a library.json written
    # before 2026-12-07)
    outputs: tuple[tuple[tuple[int, ...], str], ...] = ()


@dataclass
class Library:
    """A compiled multitask module and what a runtime needs to call it.

    `target` is TVM's target as its JSON text; for cuda, `archs` are the GPU architectures
    whose machine code an exported library carries (see `compile/cuda.py`)."""

    executable: tvm.runtime.Executable
    target: str
    mode: str
    tasks: dict[str, TaskSignature]
    compile_seconds: float
    tuning: dict | None = None  # a tuned build's TuningReport fields
    archs: tuple[str, ...] = ()
    code_format: CodeFormat | None = None  # SmartDeal pages: how its gather reads the codes

    @property
    def kind(self) -> str:
        """The target's kind: "llvm" or "cuda"."""
        return target_kind(self.target)

    def kernels(self) -> dict[str, list[str]]:
        """The compiled kernels each `task_<name>` function calls, in call order."""
        calls, task = {}, None
        for line in self.executable.as_text().splitlines():
            header = re.match(rf"@{TASK_PREFIX}(\w+):", line)
            if header:
                task = header.group(1) if header.group(1) in self.tasks else None
                continue
            call = re.match(r"\s+call\s+(\S+)\s+in:", line)
            if task and call and not call.group(1).startswith("vm.builtin."):
                calls.setdefault(task, []).append(call.group(1))
        return calls

    def export(self, directory: str) -> None:
        """`library.so` (TVM's export) and `library.json` (mode, target, task signatures).
        A cuda library's kernels go in as one fatbin for `archs`, compiled here by nvcc."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "library.so")
        if self.kind == "cuda":
            from .cuda import export_with_fatbin

            export_with_fatbin(self.executable, path, self.archs)
        else:
            linker = cross_compiler(self.target)
            if linker is None:
                self.executable.export_library(path)
            else:
                from tvm.support.cc import cross_compiler as linking_with

                self.executable.export_library(path, fcompile=linking_with(linker))
        meta = {
            "mode": self.mode,
            "target": self.target,
            "archs": list(self.archs),
            "tasks": {n: asdict(s) for n, s in self.tasks.items()},
            "compile_seconds": self.compile_seconds,
            "tuning": self.tuning,
            "code_format": asdict(self.code_format) if self.code_format else None,
        }
        with open(os.path.join(directory, "library.json"), "w") as f:
            json.dump(meta, f, indent=1)

    @staticmethod
    def load(directory: str) -> Library:
        path = os.path.join(directory, "library.json")
        if not os.path.isfile(path):
            raise ValueError(f"'{directory}' holds no library.json: not a `wvirt build` folder")
        with open(path) as f:
            meta = json.load(f)
        tasks = {
            n: TaskSignature(
                tuple((tuple(shape), dtype) for shape, dtype in s["inputs"]),
                tuple((tuple(shape), dtype) for shape, dtype in s["weights"]),
                s["n_pages"],
                tuple(s["pool_shape"]) if s["pool_shape"] else None,
                tuple((tuple(shape), dtype) for shape, dtype in s.get("outputs", ())),
            )
            for n, s in meta["tasks"].items()
        }
        triple = foreign_triple(meta["target"])
        if triple is not None:
            raise ValueError(
                f"'{directory}' was built for {triple}: load it on that CPU (the C++ runtime, "
                "docs/deploy.md, or Python there)"
            )
        if target_kind(meta["target"]) == "cuda" and not tvm.cuda().exist:
            raise ValueError(
                f"'{directory}' was built for cuda and this machine has no CUDA GPU: run it "
                "on the device, or build for llvm here"
            )
        executable = tvm.runtime.load_module(os.path.join(directory, "library.so"))
        return Library(
            executable,
            meta["target"],
            meta["mode"],
            tasks,
            meta["compile_seconds"],
            meta.get("tuning"),
            tuple(meta.get("archs", ())),
            CodeFormat(**meta["code_format"]) if meta.get("code_format") else None,
        )


def foreign_triple(target: str) -> str | None:
    """`target`'s `mtriple` (TVM's JSON text) when it names another CPU architecture than this
    machine's (a library this machine cannot load), else None. Read from the JSON text alone:
    a device with TVM's runtime only has no `tvm.target`."""
    attrs = json.loads(target) if target.lstrip().startswith("{") else {}
    triple = str(attrs.get("mtriple", "")) if target_kind(target) == "llvm" else ""
    return triple if triple and triple.split("-")[0] != platform.machine() else None


def cross_compiler(target: str) -> str | None:
    """The C++ compiler that links an llvm library for a `foreign_triple`, `<mtriple>-g++`
    (e.g. aarch64-linux-gnu-g++: `make aarch64-toolchain`); None for this machine's CPU."""
    triple = foreign_triple(target)
    if triple is None:
        return None
    linker = f"{triple}-g++"
    if shutil.which(linker) is None:
        raise ValueError(
            f"linking a library for {triple} needs the cross compiler '{linker}' "
            "(Debian/Ubuntu: `make aarch64-toolchain` installs aarch64-linux-gnu-g++)"
        )
    return linker


def target_kind(target: str) -> str:
    """The kind of a target given as TVM's JSON text (or, in older library.json files, as
    TVM's command-line string such as "cuda -arch=sm_87")."""
    if target.lstrip().startswith("{"):
        return json.loads(target)["kind"]
    return target.split()[0]


def check_archs(archs: Sequence[str]) -> tuple[str, ...]:
    """GPU architectures as nvcc names them (sm_87, sm_90a), in the order given, without
    repeats."""
    archs = tuple(dict.fromkeys(a.strip() for a in archs))
    bad = [a for a in archs if not re.fullmatch(r"sm_\d+[a-z]?", a)]
    if bad or not archs:
        raise ValueError(
            f"GPU architecture {bad[0] if bad else '(none)'!r}: expected sm_<number>, e.g. sm_87"
        )
    return archs


def sm_number(arch: str) -> int:
    """The compute capability an nvcc arch names: sm_87 -> 87, sm_90a -> 90."""
    return int(arch[3:].rstrip("abcdefghijklmnopqrstuvwxyz"))
