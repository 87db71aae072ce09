"""Level-2 storage of exclusive pages: a .wvpack file read on demand, or arrays in memory."""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from tvm_weightvirt.plan import PagePlan


class PageStore:
    """Loads a task's exclusive pages `[E, P]` into a level-1 scratch.

    With `path` (the .wvpack the plan came from), pages are read from the file at every load,
    as a device reads flash or eMMC: the safetensors header gives each `exclusive.<task>`
    tensor's byte range, and each load reads exactly that range with one `readinto`. (Not a
    memory map: a file truncated under a map turns the next read into SIGBUS; a read returns
    short and becomes an error naming the file.) Without `path`, the plan's own arrays stand in
    for level 2.
    """

    def __init__(self, plan: PagePlan, path: str | None = None) -> None:
        self.page_size = plan.page_size
        self.n_pages = {name: t.n_exclusive_pages for name, t in plan.tasks.items()}
        self.path = path
        self.arrays = {name: t.exclusive_pages for name, t in plan.tasks.items()}
        self.ranges: dict[str, tuple[int, int]] = {}
        if path is not None:
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            for name, n in self.n_pages.items():
                if n:
                    start, end = header[f"exclusive.{name}"]["data_offsets"]
                    assert end - start == n * self.page_size * 4, (name, start, end, n)
                    self.ranges[name] = (8 + header_len + start, 8 + header_len + end)

    def load(self, task: str, scratch: np.ndarray) -> int:
        """Copy the task's exclusive pages into the start of `scratch` (float32); returns the
        bytes read from level 2."""
        n_bytes = self.n_pages[task] * self.page_size * 4
        target = scratch.reshape(-1)[: n_bytes // 4]
        if self.path is None:
            np.copyto(target, self.arrays[task].reshape(-1))
            return n_bytes
        start, end = self.ranges[task]
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                read = f.readinto(memoryview(target).cast("B"))
        except OSError as err:
            raise ValueError(
                f"task '{task}': cannot read its exclusive pages from level-2 "
                f"file '{self.path}': {err}"
            ) from err
        if read != n_bytes:
            raise ValueError(
                f"task '{task}': level-2 file '{self.path}' is truncated: its exclusive pages "
                f"need bytes [{start}, {end}), the file has {os.path.getsize(self.path)}"
            )
        return n_bytes
