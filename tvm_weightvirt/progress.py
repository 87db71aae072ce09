"""Progress of long work: a tqdm bar on a terminal, a few log lines with elapsed time when
output goes to a pipe or a log file (where a bar shows nothing)."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("tvm_weightvirt")
LINES = 10  # at most this many log lines per loop, plus the last


def steps(items: Iterable[T], desc: str, enabled: bool = True) -> Iterator[T]:
    """`items` with progress: `desc i/n` lines (elapsed seconds) every n/LINES items when
    stderr is not a terminal; a tqdm bar when it is; nothing when not `enabled`."""
    items = list(items)
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, desc)
        return
    start, every = time.perf_counter(), max(1, math.ceil(len(items) / LINES))
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0 or i == len(items):
            log.info("%s %d/%d (%.1f s)", desc, i, len(items), time.perf_counter() - start)
