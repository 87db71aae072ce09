"""CUDA libraries without a GPU: their kernel source, and ahead-of-time fatbins for a device
(e.g. a Jetson Orin, sm_87) that should not need a compiler."""

from __future__ import annotations

import os
import re
import shutil

from .compiler import Library


def cuda_source(library: Library) -> str:
    """The CUDA C source of every kernel of a library built for a cuda target."""
    modules = library.executable.mod._collect_from_import_tree(lambda m: m.kind == "cuda")
    if not modules:
        raise ValueError(f"the library was built for {library.target.kind.name}, not cuda")
    return "\n".join(m.inspect_source("cuda") for m in modules)


def compile_fatbin(library: Library, arch: str, path: str) -> int:
    """Compile the library's kernels with nvcc for `arch` (e.g. "sm_87") into a fatbin at
    `path`; returns its size in bytes."""
    from tvm.support import nvcc

    if shutil.which("nvcc") is None:
        raise ValueError("nvcc is not on PATH: install the CUDA toolkit to compile fatbins")
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise ValueError(f"GPU architecture {arch!r}: expected sm_<number>, e.g. sm_87")
    with library.target:  # TVM's nvcc helper reads the compute version from the current target
        try:
            fatbin = nvcc.compile_cuda(
                cuda_source(library), target_format="fatbin", arch=arch, compiler="nvcc"
            )
        except RuntimeError as err:  # its message carries the whole source: keep nvcc's words
            said = [line for line in str(err).splitlines() if "nvcc" in line or "error" in line]
            raise ValueError(
                f"nvcc cannot compile the kernels for {arch}: {' '.join(said[-3:])}"
            ) from None
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(fatbin)
    os.replace(tmp, path)
    return len(fatbin)
