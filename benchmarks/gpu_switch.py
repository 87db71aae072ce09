"""GPU context-switch benchmark: packed (materialize, fused) vs. reload vs. resident on a CUDA
GPU, with a device memcpy of the same bytes; the systems are loaded with TVM's runtime from the
artifacts of `tests/gpu/gpu_artifacts.py` (WVIRT_GPU_ARTIFACTS, else built here first)."""

from __future__ import annotations

import os
import sys
import tempfile

from benchmarks._common import run
from tvm_weightvirt.apps.bench import format_switch_table, gpu_switch_benchmark


def measure(quick: bool) -> dict:
    artifacts = os.environ.get("WVIRT_GPU_ARTIFACTS")
    if not artifacts:
        import tvm

        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "gpu"))
        from gpu_artifacts import prepare

        arch = "sm_" + tvm.cuda().compute_version.replace(".", "")
        artifacts = prepare(tempfile.mkdtemp(prefix="wvirt-gpu-"), (arch,))
    return gpu_switch_benchmark(artifacts, quick)


if __name__ == "__main__":
    run(__doc__, measure, format_switch_table)
