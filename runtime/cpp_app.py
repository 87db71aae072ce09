"""The C++ runtime from Python: build `examples/cpp`'s `wv_serve` (libwvirt_runtime + an app
that answers requests from .npy files) with CMake, and serve requests through it. What the tests,
the benchmark and the tutorial use to compare it with `MultitaskRuntime`; a device runs the app
(or its own program on `wvirt.h`) without Python."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tvm_weightvirt.cache import cache_dir

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "cpp")  # libwvirt_runtime's CMake project (package data too)
HEADERS = os.path.join(SOURCE, "include")
EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "cpp")  # in a checkout only
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


def build_wv_serve(build_dir: str | None = None) -> str:
    """Configure and build `examples/cpp` into `build_dir` (against this Python's TVM wheel);
    returns the path of the `wv_serve` executable. By default the build is kept in the cache
    (`cache_dir()`, one per Python environment), so a later call only rebuilds what changed."""
    if build_dir is None:
        environment = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
        build_dir = os.path.join(cache_dir(), "cpp", environment)
    if not os.path.isfile(os.path.join(EXAMPLE, "CMakeLists.txt")):
        raise FileNotFoundError(
            f"no C++ example at '{EXAMPLE}': the C++ runtime builds from a checkout of "
            "tvm-weightvirt"
        )
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(f"building the C++ runtime needs {' and '.join(missing)} on PATH")
    configure = ["cmake", "-S", EXAMPLE, "-B", build_dir, f"-DPython_EXECUTABLE={sys.executable}"]
    configure += ["-DCMAKE_BUILD_TYPE=Release"]
    for command in (configure, ["cmake", "--build", build_dir, "--parallel"]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr}")
    return os.path.join(build_dir, "wv_serve")


def serve(
    wv_serve: str,
    library_dir: str,
    pack: str,
    requests: Sequence[tuple[str, Sequence[np.ndarray]]],
    work_dir: str,
    repeat: int = 1,
) -> tuple[list[list[np.ndarray]], ServeReport]:
    """Run `wv_serve` on `requests` [(task, inputs)] (inputs written to `work_dir` as .npy);
    returns each request's outputs and the app's report. A failure raises with its message."""
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
    command = [
        wv_serve,
        library_dir,
        pack,
        request_file,
        "--out",
        os.path.join(work_dir, "outputs"),
    ]
    done = subprocess.run(command + ["--repeat", str(repeat)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"wv_serve exited with {done.returncode}")
    match = REPORT.search(done.stdout)
    if match is None:
        raise RuntimeError(f"wv_serve printed no report: {done.stdout!r}")
    report = ServeReport(*(int(g) for g in match.groups()[:3]), float(match[4]), int(match[5]))
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
