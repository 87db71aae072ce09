"""The coverage matrix: each of 13 common architectures (`apps/architectures.py`), through the
torch path and an ONNX export, passes every column of `apps.coverage.check`: intake; lossless
(the llvm build and the torch twin at batch 1 and 3 within 1e-5 of torch, relative); sharing
(a pair packed onto half a task's pages retrains with finite objectives, at least one turn kept,
and the build computes what the twin does on the packed weights); Cortex-M (QEMU within 1e-5 of
the llvm build, A -> B -> A)."""

import pytest

from tvm_weightvirt.apps import coverage
from tvm_weightvirt.apps.architectures import ARCHITECTURES
from tvm_weightvirt.targets import mcu

pytestmark = pytest.mark.slow  # 26 packs, 26 QEMU runs: about 4 minutes on 2 cores


@pytest.mark.parametrize("path", coverage.PATHS)
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_column_passes(name, path):
    no_qemu = bool(mcu.missing_tools())
    columns = coverage.COLUMNS[:-1] if no_qemu else coverage.COLUMNS
    assert coverage.check(name, path, columns) == {c: coverage.OK for c in columns}
    if no_qemu:
        pytest.skip("no Arm toolchain / QEMU (`make arm-toolchain`): the Cortex-M column unchecked")
