#!/usr/bin/env bash
# Every GPU check of tvm-weightvirt in one call, under 10 minutes: the `gpu` tests (every
# backend bit for bit, A->B->A switching, exclusive-page prefetch, coded gather, small nets ==
# CPU in both modes, the fatbin's arch) and the GPU switch benchmark.
#
#   benchmarks/gpu_check.sh [OUT]          # a GPU machine with the project installed
#
# On a GPU machine with TVM's runtime only (a Jetson, or a bare GPU box), build the artifacts
# where TVM's compiler and nvcc are, copy them over, and point the check at them:
#   python tests/gpu/gpu_artifacts.py ART --arch sm_87,sm_90     # build host
#   WVIRT_GPU_ARTIFACTS=ART TVM_USE_RUNTIME_LIB=1 benchmarks/gpu_check.sh OUT
set -uo pipefail
out=${1:-out/gpu_check}
python=${PYTHON:-python3}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
status=0
$python -m pytest -q -m gpu tests/gpu -rs -p no:cacheprovider 2>&1 | tee "$out/tests.log" || status=1
$python -m benchmarks.gpu_switch --json "$out/gpu_switch.json" 2>&1 | tee "$out/gpu_switch.log" || status=1
exit $status
