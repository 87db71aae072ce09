"""TVM's C++ log lines that a user cannot act on, dropped where our code triggers them."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# Fused mode gathers pages with `take(mode="fast")`: its indices are page-table entries, which
# `PagePlan.problems` and the runtime check against the pool before any call. A task's own
# takes in fast mode are at constant indices that intake checked (`NormalizeTakeIndices`:
# computed indices wrap).
TAKE_FAST_MODE = b"Fast mode segfaults when there are out-of-bounds indices"


@contextlib.contextmanager
def without_native_lines(*markers: bytes) -> Iterator[None]:
    """Run the block with the process's stderr (fd 2, where TVM's C++ logging writes) captured;
    afterwards pass on every line that contains none of `markers`. With `WVIRT_DEBUG` set,
    nothing is captured. Keep the block short: its other stderr output is delayed to its end."""
    if os.environ.get("WVIRT_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not any(marker in line for marker in markers):
                    os.write(2, line)
