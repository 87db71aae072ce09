"""Pages mapped instead of copied: a task's weights as one contiguous virtual range whose
memory pages are the pool's pages (Linux: a memfd holds the pages, `mmap` places them). The
page table then lives in the MMU, and a context switch picks a range instead of moving bytes."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import weakref

import numpy as np

OS_PAGE_BYTES = mmap.PAGESIZE
_PROT_NONE, _MAP_FIXED = 0, 0x10  # Linux values (the mmap module does not export them)

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def mapping_problems(page_bytes: int) -> list[str]:
    """Why pages of `page_bytes` cannot be mapped on this machine (empty when they can)."""
    problems = []
    if not sys.platform.startswith("linux"):
        problems.append(f"mapping pages needs Linux (memfd_create), this is {sys.platform}")
    if page_bytes % OS_PAGE_BYTES:
        problems.append(
            f"a page is {page_bytes} B, not a multiple of the OS page ({OS_PAGE_BYTES} B): pack "
            f"with a page size that is a multiple of {OS_PAGE_BYTES // 4} weights"
        )
    return problems


class SharedPages:
    """`n_pages` pages of `page_bytes` in an anonymous shared-memory file, writable through
    `array` (`[n_pages, page_bytes // 4]` float32); `MappedRange` places them in virtual
    ranges."""

    def __init__(self, n_pages: int, page_bytes: int, name: str) -> None:
        self.fd = os.memfd_create(name)
        weakref.finalize(self, os.close, self.fd)
        self.page_bytes, self.n_pages = page_bytes, n_pages
        os.ftruncate(self.fd, n_pages * page_bytes)
        self._memory = mmap.mmap(self.fd, max(1, n_pages) * page_bytes)
        self.array = np.frombuffer(self._memory, np.float32, n_pages * page_bytes // 4).reshape(
            n_pages, page_bytes // 4
        )


class MappedRange:
    """Read-only virtual memory at `address` whose page `i` is `sources[i]` (a `SharedPages`
    and a page of it); consecutive pages of one file are placed by one `mmap` call each run.
    Unmapped when the object is collected."""

    def __init__(self, sources: list[tuple[SharedPages, int]]) -> None:
        page_bytes = sources[0][0].page_bytes if sources else OS_PAGE_BYTES
        self.n_bytes = max(1, len(sources)) * page_bytes
        # reserve the whole range first, so that the runs below land side by side
        self.address = _checked(
            _mmap(None, self.n_bytes, _PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0),
            self.n_bytes,
        )
        weakref.finalize(self, _munmap, self.address, self.n_bytes)
        for start, count, shared, first in _runs(sources):
            placed = _mmap(
                self.address + start * page_bytes,
                count * page_bytes,
                mmap.PROT_READ,
                mmap.MAP_SHARED | _MAP_FIXED,
                shared.fd,
                first * page_bytes,
            )
            _checked(placed, count * page_bytes)


def _runs(sources: list[tuple[SharedPages, int]]) -> list[tuple[int, int, SharedPages, int]]:
    """(start, length, file, first page) of each run of consecutive pages of one file."""
    runs: list[list] = []
    for i, (shared, page) in enumerate(sources):
        last = runs[-1] if runs else None
        if last and last[2] is shared and last[3] + last[1] == page:
            last[1] += 1
        else:
            runs.append([i, 1, shared, page])
    return [tuple(r) for r in runs]


def _checked(address: int | None, n_bytes: int) -> int:
    if address is None or address == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(
            err,
            f"cannot map {n_bytes} B of pages: {os.strerror(err)} (a process holds at most "
            "/proc/sys/vm/max_map_count mappings; larger pages need fewer)",
        )
    return address
