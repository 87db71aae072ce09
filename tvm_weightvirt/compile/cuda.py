"""CUDA libraries that load without a compiler: nvcc compiles the kernels ahead of time into
one fatbin holding machine code for every listed GPU (e.g. a Jetson Orin, sm_87), and the
exported `library.so` carries that fatbin instead of CUDA source. A device loads it with the
CUDA driver alone (`cuModuleLoadData`): no NVRTC, nvcc or Python compile hook there.

TVM's CUDA codegen hands its source to the CUDA runtime when it is present, else stores the
source (`CUDAFallbackModuleNode`, as on a build host without a GPU); either way the module is
serialized as (format, function table, code). Export rewrites that record to ("fatbin", the
same table, nvcc's fatbin): the format TVM's `ffi.Module.load_from_bytes.cuda` reads."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence

import tvm

from .library_blob import LibraryBlob, Reader, pack_string, read_blob

NVCC_MISSING = (
    "nvcc is not on PATH: building for cuda compiles the kernels ahead of time, which needs the "
    "CUDA toolkit on this (build) machine (NVIDIA's cuda-toolkit, or Debian/Ubuntu's "
    "nvidia-cuda-toolkit). The device that loads the library needs only the CUDA driver."
)
FATBIN_MAGIC = 0xBA55ED50
FATBIN_ELF, FATBIN_PTX = 2, 1


def cuda_source(executable) -> str:
    """The CUDA C source of every kernel of an executable (`Library.executable`) built for a
    cuda target."""
    modules = executable.mod._collect_from_import_tree(lambda m: m.kind == "cuda")
    if not modules:
        raise ValueError("the executable holds no CUDA kernels (built for another target)")
    return "\n".join(m.inspect_source("cuda") for m in modules)


def compile_fatbin(source: str, archs: Sequence[str]) -> bytes:
    """nvcc's fatbin of `source` with machine code (SASS) for each of `archs` (sm_87, ...)."""
    from tvm.support import nvcc

    if shutil.which("nvcc") is None:
        raise ValueError(NVCC_MISSING)
    gencode = []
    for arch in archs:
        number = arch[3:]
        gencode += ["-gencode", f"arch=compute_{number},code=sm_{number}"]
    lowest = tvm.target.Target({"kind": "cuda", "arch": archs[0]})
    try:
        with lowest:  # TVM's nvcc helper also reads the compute version from the current target
            fatbin = nvcc.compile_cuda(
                source, target_format="fatbin", arch=gencode, compiler="nvcc"
            )
        return bytes(fatbin)
    except RuntimeError as err:  # its message carries the whole source: keep nvcc's words
        said = [line for line in str(err).splitlines() if "nvcc" in line or "error" in line]
        raise ValueError(
            f"nvcc cannot compile the kernels for {', '.join(archs)}: {' '.join(said[-3:])}"
        ) from None


def export_with_fatbin(executable, path: str, archs: Sequence[str]) -> None:
    """`executable.export_library(path)` with each CUDA module stored as a fatbin for
    `archs`, compiled here by nvcc (never as source to compile where it loads)."""
    if shutil.which("nvcc") is None:
        raise ValueError(NVCC_MISSING)
    sources = [
        m.inspect_source("cuda")
        for m in executable.mod._collect_from_import_tree(lambda m: m.kind == "cuda")
    ]

    def pack_imports(mod, is_system_lib: bool, prefix: str, workspace: str) -> str:
        pack = tvm.get_global_func("runtime.ModulePackImportsToTensor")
        blob = LibraryBlob.parse(pack(mod).numpy().tobytes())
        for i, (kind, data) in enumerate(blob.modules):
            if kind == "cuda":
                fmt, table, code = split_cuda_module(data)
                if fmt == "cuda":
                    source = code.decode()
                elif len(sources) == 1:
                    source = sources[0]
                else:
                    raise ValueError(f"cannot tell the CUDA source of a {fmt} module")
                blob.modules[i] = (
                    kind,
                    join_cuda_module("fatbin", table, compile_fatbin(source, archs)),
                )
        codegen_blob = tvm.get_global_func("codegen.codegen_blob")
        host = mod._collect_from_import_tree(lambda m: m.kind == "llvm")
        llvm_target = host[0].get_function("_get_target_string")()
        out = os.path.join(workspace, f"{prefix}devc.o")
        codegen_blob(blob.to_bytes(), is_system_lib, llvm_target, prefix).write_to_file(out)
        return out

    executable.export_library(path, fpack_imports=pack_imports)


def split_cuda_module(data: bytes) -> tuple[str, bytes, bytes]:
    """A serialized CUDA module: (format, its function table as stored, code)."""
    reader = Reader(data)
    fmt = reader.string().decode()
    table_start = reader.offset
    for _ in range(reader.u64()):  # Map<String, FunctionInfo>
        reader.string()  # the key
        reader.string()  # FunctionInfo.name
        reader.take(4 * reader.u64())  # arg_types: DLDataType, 4 bytes each
        for _ in range(reader.u64()):  # launch_param_tags
            reader.string()
        reader.take(4 * reader.u64())  # arg_extra_tags: int32 each
    table = data[table_start : reader.offset]
    code = reader.string()
    if reader.offset != len(data):
        raise ValueError(f"CUDA module record has {len(data) - reader.offset} bytes past its code")
    return fmt, table, code


def join_cuda_module(fmt: str, table: bytes, code: bytes) -> bytes:
    return pack_string(fmt.encode()) + table + pack_string(code)


def library_cuda_binaries(library_path: str) -> list[tuple[str, bytes]]:
    """(format, code) of each CUDA module in an exported library, read without loading them
    (so without a GPU)."""
    blob = LibraryBlob.parse(read_blob(library_path))
    out = []
    for kind, data in blob.modules:
        if kind == "cuda":
            fmt, _, code = split_cuda_module(data)
            out.append((fmt, code))
    return out


def fatbin_entries(fatbin: bytes) -> list[tuple[str, str]]:
    """(kind "elf" or "ptx", arch "sm_87") of each entry of a fatbin, read from its headers:
    a 16-byte header (magic, version, header size, body size), then entries, each a header
    (kind u16, u16, header size u32, payload size u64, ..., arch u32 at byte 28) and its
    payload."""
    magic, _, header_size, body_size = struct.unpack_from("<IHHQ", fatbin, 0)
    if magic != FATBIN_MAGIC:
        raise ValueError(f"not a fatbin: magic {magic:#x}, expected {FATBIN_MAGIC:#x}")
    entries, offset, end = [], header_size, header_size + body_size
    while offset < end:
        kind, _, entry_header, size = struct.unpack_from("<HHIQ", fatbin, offset)
        (arch,) = struct.unpack_from("<I", fatbin, offset + 28)
        names = {FATBIN_ELF: "elf", FATBIN_PTX: "ptx"}
        entries.append((names.get(kind, f"kind{kind}"), f"sm_{arch}"))
        offset += entry_header + size
    return entries


def cuobjdump_elves(fatbin: bytes) -> list[str] | None:
    """`cuobjdump --list-elf` of a fatbin (its ELF names), or None without cuobjdump."""
    if shutil.which("cuobjdump") is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".fatbin") as f:
        f.write(fatbin)
        f.flush()
        listed = subprocess.run(
            ["cuobjdump", "--list-elf", f.name], capture_output=True, text=True, check=True
        )
    return [line.split()[-1] for line in listed.stdout.splitlines() if line.strip()]
