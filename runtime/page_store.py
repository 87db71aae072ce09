"""Level-2 storage of exclusive pages: a .wvpack file read on demand, or arrays in memory."""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from tvm_weightvirt.plan import PagePlan, TaskPages


class PageStore:
    """Loads a task's exclusive pages into level-1 scratches: float32 pages `[E, P]`, or
    (SmartDeal pages) packed codes `[E, row_words]` and bases `[E, 3, 3]`.

    With `path` (the .wvpack the plan came from), pages are read from the file at every load,
    as a device reads flash or eMMC: the safetensors header gives each tensor's byte range
    (`exclusive.<task>`, or `exclusive_codes.<task>` and `exclusive_bases.<task>`), and each
    load reads exactly those ranges with one `readinto` each. (Not a memory map: a file
    truncated under a map turns the next read into SIGBUS; a read returns short and becomes an
    error naming the file.) Without `path`, the plan's own arrays stand in for level 2.
    """

    def __init__(self, plan: PagePlan, path: str | None = None) -> None:
        self.arrays = {name: _stored(t) for name, t in plan.tasks.items() if t.n_exclusive_pages}
        self.path = path
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        if path is not None:
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            keys = ("exclusive",) if plan.coded is None else ("exclusive_codes", "exclusive_bases")
            for name, arrays in self.arrays.items():
                self.ranges[name] = []
                for key, array in zip(keys, arrays):
                    start, end = header[f"{key}.{name}"]["data_offsets"]
                    assert end - start == array.nbytes, (name, key, start, end, array.nbytes)
                    self.ranges[name].append((8 + header_len + start, 8 + header_len + end))

    def shapes(self, n_pages: int) -> list[tuple[tuple[int, ...], str]]:
        """Shape and dtype of each scratch that holds `n_pages` exclusive pages."""
        example = next(iter(self.arrays.values()))
        return [((n_pages, *a.shape[1:]), str(a.dtype)) for a in example]

    def load(self, task: str, scratches: list[np.ndarray]) -> int:
        """Copy the task's exclusive pages (each part) into the start of its scratch; returns
        the bytes read from level 2."""
        arrays = self.arrays[task]
        targets = [s.reshape(-1)[: a.size] for s, a in zip(scratches, arrays)]
        if self.path is None:
            for target, array in zip(targets, arrays):
                np.copyto(target, array.reshape(-1))
            return sum(a.nbytes for a in arrays)
        n_bytes = 0
        try:
            with open(self.path, "rb") as f:
                for target, (start, end) in zip(targets, self.ranges[task]):
                    f.seek(start)
                    read = f.readinto(memoryview(target).cast("B"))
                    if read != end - start:
                        raise ValueError(
                            f"task '{task}': level-2 file '{self.path}' is truncated: its "
                            f"exclusive pages need bytes [{start}, {end}), the file has "
                            f"{os.path.getsize(self.path)}"
                        )
                    n_bytes += read
        except OSError as err:
            raise ValueError(
                f"task '{task}': cannot read its exclusive pages from level-2 "
                f"file '{self.path}': {err}"
            ) from err
        return n_bytes


def _stored(t: TaskPages) -> list[np.ndarray]:
    """A task's exclusive pages as level 2 stores them."""
    if t.coded is None:
        return [t.exclusive_pages]
    return [t.coded.packed, t.coded.bases]
