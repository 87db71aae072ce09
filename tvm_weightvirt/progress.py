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


def steps(items: Iterable[T], desc: str) -> Iterator[T]:
    """`items` with progress: a tqdm bar when stderr is a terminal; else `desc i/n` lines
    (elapsed seconds) every n/LINES items on the `tvm_weightvirt` logger at level INFO (shown
    by the CLI; in Python, where logging is configured to show them)."""
    items = list(items)
    if sys.stderr.isatty():
        yield from tqdm(items, desc)
        return
    lines = LogLines(desc, len(items))
    for item in items:
        yield item
        lines.advance(1)


class LogLines:
    """`desc done/total (elapsed s)` lines: one per total/LINES units done, and the last."""

    def __init__(self, desc: str, total: int) -> None:
        self.desc, self.total, self.done = desc, total, 0
        self.every = max(1, math.ceil(total / LINES))
        self.start = time.perf_counter()

    def advance(self, n: int) -> None:
        before, self.done = self.done, self.done + n
        if self.done // self.every > before // self.every or self.done >= self.total > before:
            seconds = time.perf_counter() - self.start
            log.info("%s %d/%d (%.1f s)", self.desc, self.done, self.total, seconds)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is emitted (callers may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: it flushes the old one, maybe closed
        super().emit(record)


def log_to_stderr(prefix: str = "") -> None:
    """Show the library's notes and progress lines (level INFO) on stderr, once per process:
    what the CLI and the benchmarks do; a Python user configures logging as they like."""
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
