"""The page plan: shared pool, per-task page tables and exclusive pages (virtual weight memory)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .coded_pages import CodedPages
from .layout import PageLayout, check_page_size, weight_alignment

PAGE_TABLE_DTYPE = np.int32  # page tables in memory, as the algorithms index with them
PAGE_TABLE_IDS_UINT16 = 1 << 16  # stored as uint16 up to this many page ids
STORED_PAGE_TABLE_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32))


def page_table_dtype(n_ids: int) -> np.dtype:
    """The dtype page tables with ids in [0, n_ids) are stored in (the .wvpack, the runtimes'
    resident tables, the kernels that read them): uint16 where every id fits, else int32."""
    uint16, int32 = STORED_PAGE_TABLE_DTYPES
    return uint16 if n_ids <= PAGE_TABLE_IDS_UINT16 else int32


TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class HasWeights(Protocol):
    name: str
    weights: Mapping[str, np.ndarray]


@dataclass
class TaskPages:
    """One task's view of the virtual weight memory.

    `page_table[i]` names where the task's logical page `i` lives: a value `v < S` (the pool's
    page count) is pool page `v`; `v >= S` is the task's exclusive page `v - S` (level-2 storage).
    With `coded` (a plan of SmartDeal pages), the exclusive pages are stored as codes and bases
    too, in the pool's code format, and `exclusive_pages` is their decoding.
    """

    layout: PageLayout
    page_table: np.ndarray
    exclusive_pages: np.ndarray | None = None
    coded: CodedPages | None = None

    def __post_init__(self) -> None:
        self.page_table = np.ascontiguousarray(self.page_table, dtype=PAGE_TABLE_DTYPE)
        if self.exclusive_pages is None:
            self.exclusive_pages = (
                np.zeros((0, self.layout.page_size), np.float32)
                if self.coded is None
                else self.coded.decode()
            )
        self.exclusive_pages = np.ascontiguousarray(self.exclusive_pages, dtype=np.float32)

    @property
    def n_exclusive_pages(self) -> int:
        return int(self.exclusive_pages.shape[0])

    @property
    def exclusive_bytes(self) -> int:
        """What the exclusive pages take stored: float32 pages, or codes + bases when coded."""
        return self.exclusive_pages.nbytes if self.coded is None else self.coded.stored_bytes


@dataclass
class PagePlan:
    """Page size `P`, a shared pool `[S, P]` of float32 and, per task, its layout and page table.

    Every algorithm writes this structure, the artifact stores it, the passes lower it, the
    runtimes make it resident. The constructor checks every invariant (see `problems`).
    With `coded` (SmartDeal pages), the pool is stored as power-of-two codes and per-page bases
    and `pool` is their decoding (`PagePlan.from_coded`).
    """

    page_size: int
    pool: np.ndarray
    tasks: dict[str, TaskPages] = field(default_factory=dict)
    coded: CodedPages | None = None

    def __post_init__(self) -> None:
        check_page_size(self.page_size)
        self.pool = np.ascontiguousarray(self.pool, dtype=np.float32)
        problems = self.problems()
        if problems:
            raise ValueError("invalid page plan:\n  " + "\n  ".join(problems))

    # **** construction ****

    @staticmethod
    def lossless(
        tasks: Iterable[HasWeights], page_size: int = 100, page_aligned: bool = False
    ) -> PagePlan:
        """Identity page tables, no sharing: task after task, each on pages of its own
        (`page_aligned`: each weight starting on a page)."""
        check_page_size(page_size)
        tasks = list(tasks)
        check_unique_names([t.name for t in tasks])
        pages, task_pages, next_page = [], {}, 0
        for t in tasks:
            layout = layout_of(t, page_size, page_aligned)
            pages.append(layout.to_pages(t.weights))
            table = np.arange(next_page, next_page + layout.n_pages)
            task_pages[t.name] = TaskPages(layout, table)
            next_page += layout.n_pages
        pool = np.concatenate(pages) if pages else np.zeros((0, page_size), np.float32)
        return PagePlan(page_size, pool, task_pages)

    @staticmethod
    def from_coded(page_size: int, coded: CodedPages, tasks: dict[str, TaskPages]) -> PagePlan:
        """A plan whose pool is SmartDeal pages: `pool` = `coded.decode()`."""
        return PagePlan(page_size, coded.decode(), tasks, coded)

    # **** queries ****

    @property
    def n_pool_pages(self) -> int:
        return int(self.pool.shape[0])

    @property
    def pool_bytes(self) -> int:
        """What the pool takes stored: float32 pages, or codes + bases when coded."""
        return self.coded.stored_bytes if self.coded is not None else self.pool.nbytes

    @property
    def page_table_dtype(self) -> np.dtype:
        """The dtype the tables are stored in (`page_table_dtype` of the largest id: the pool's
        pages and a task's exclusive pages)."""
        most = max((t.n_exclusive_pages for t in self.tasks.values()), default=0)
        return page_table_dtype(self.n_pool_pages + most)

    def stored_page_table(self, name: str) -> np.ndarray:
        """A task's page table as stored and as the kernels read it (`page_table_dtype`)."""
        return self.task(name).page_table.astype(self.page_table_dtype)

    @property
    def page_table_bytes(self) -> int:
        """What all tasks' page tables take stored."""
        entries = sum(t.page_table.size for t in self.tasks.values())
        return entries * self.page_table_dtype.itemsize

    @property
    def exclusive_bytes(self) -> int:
        """What all tasks' exclusive pages take stored (level 2)."""
        return sum(t.exclusive_bytes for t in self.tasks.values())

    def task(self, name: str) -> TaskPages:
        if name not in self.tasks:
            raise KeyError(f"no task '{name}' in the page plan (has {sorted(self.tasks)})")
        return self.tasks[name]

    def pages(self, name: str) -> np.ndarray:
        """A task's logical pages `[n_pages, P]`, each from the pool or its exclusive pages."""
        t = self.task(name)
        shared = t.page_table < self.n_pool_pages
        out = np.empty((len(t.page_table), self.page_size), np.float32)
        out[shared] = self.pool[t.page_table[shared]]
        out[~shared] = t.exclusive_pages[t.page_table[~shared] - self.n_pool_pages]
        return out

    def read(self, name: str) -> dict[str, np.ndarray]:
        """A task's weights as its page table says: `w[j] = V[table[j // P], j % P]` (NWV A.2)."""
        return self.task(name).layout.unflatten(self.pages(name).reshape(-1))

    def problems(self) -> list[str]:
        """Every broken invariant, one line each: page ids in range, unique within a task (unless
        the task has more pages than it can address), shapes."""
        out = []
        if self.pool.ndim != 2 or self.pool.shape[1] != self.page_size:
            out.append(f"pool has shape {self.pool.shape}, expected [S, {self.page_size}]")
            return out
        if self.coded is not None:
            c = self.coded
            if c.codes.shape != self.pool.shape or c.bases.shape != (self.n_pool_pages, 3, 3):
                out.append(
                    f"coded pool: codes {c.codes.shape} and bases {c.bases.shape} do not fit "
                    f"a pool of {self.pool.shape}"
                )
            elif not np.array_equal(c.decode(), self.pool):
                out.append("coded pool: the pool is not the decoding of its codes and bases")
        for name, t in self.tasks.items():
            where = f"task '{name}'"
            if not TASK_NAME.match(name):
                out.append(f"{where}: name is not an identifier (it names an IR function)")
            if t.layout.page_size != self.page_size:
                out.append(f"{where}: layout page size {t.layout.page_size} != {self.page_size}")
            if t.page_table.shape != (t.layout.n_pages,):
                out.append(
                    f"{where}: page table has shape {t.page_table.shape}, "
                    f"layout needs ({t.layout.n_pages},)"
                )
            if t.exclusive_pages.ndim != 2 or t.exclusive_pages.shape[1] != self.page_size:
                out.append(f"{where}: exclusive pages have shape {t.exclusive_pages.shape}")
                continue
            out.extend(self._coded_exclusive_problems(where, t))
            limit = self.n_pool_pages + t.n_exclusive_pages
            bad = t.page_table[(t.page_table < 0) | (t.page_table >= limit)]
            if bad.size:
                out.append(
                    f"{where}: page ids {bad[:5].tolist()} out of range [0, {limit}) "
                    f"({self.n_pool_pages} pool + {t.n_exclusive_pages} exclusive pages)"
                )
            ids, counts = np.unique(t.page_table, return_counts=True)
            if (counts > 1).any() and t.page_table.size <= limit:
                out.append(
                    f"{where}: page ids {ids[counts > 1][:5].tolist()} used twice (a task shares "
                    "pages within itself only when it has more pages than the pool)"
                )
        return out

    def non_finite(self) -> list[str]:
        """Every task whose weights hold NaN or inf, naming the weights, and every pool page
        that does, one line each: what a pack must never store (a NaN weight is a NaN output)."""
        bad_pool = ~np.isfinite(self.pool).all(axis=1)
        out = []
        for name, t in self.tasks.items():
            if not (
                bad_pool[t.page_table[t.page_table < self.n_pool_pages]].any()
                or not np.isfinite(t.exclusive_pages).all()
            ):
                continue
            bad = [w for w, v in self.read(name).items() if not np.isfinite(v).all()]
            if bad:
                shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                out.append(f"task '{name}': weights {shown} hold NaN or inf")
        if bad_pool.any():
            ids = np.flatnonzero(bad_pool)
            out.append(
                f"pool pages {ids[:8].tolist()}{' ...' if len(ids) > 8 else ''} "
                f"({len(ids)} of {self.n_pool_pages}) hold NaN or inf"
            )
        return out

    def _coded_exclusive_problems(self, where: str, t: TaskPages) -> list[str]:
        """A coded plan's exclusive pages are coded, in the pool's format, and decode to
        `exclusive_pages`; a float plan's are not coded."""
        if t.coded is None:
            if self.coded is not None and t.n_exclusive_pages:
                return [f"{where}: the pool is SmartDeal pages, its exclusive pages are not"]
            return []
        if self.coded is None and t.n_exclusive_pages:
            return [f"{where}: coded exclusive pages beside a float32 pool"]
        if self.coded is None:
            return []
        c = t.coded
        if c.codes.shape != t.exclusive_pages.shape or c.bases.shape != (len(c.codes), 3, 3):
            return [
                f"{where}: coded exclusive pages: codes {c.codes.shape} and bases "
                f"{c.bases.shape} do not fit {t.exclusive_pages.shape} exclusive pages"
            ]
        if c.format != self.coded.format:
            return [
                f"{where}: exclusive pages stored as {c.format}, the pool as {self.coded.format}"
                " (one format per plan)"
            ]
        if not np.array_equal(c.decode(), t.exclusive_pages):
            return [f"{where}: the exclusive pages are not the decoding of their codes and bases"]
        return []

    def stacked_pages(self, names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The pool and the exclusive pages of the tasks `names`, in that order, stacked into
        one array of pages, and each task's table into it (exclusive ids shifted past the
        earlier tasks' exclusive pages): one memory that retraining trains and that zero-copy
        kernels read."""
        parts, tables, offset = [self.pool], [], self.n_pool_pages
        for name in names:
            t = self.task(name)
            table = t.page_table.astype(np.int64)
            exclusive = table >= self.n_pool_pages
            table[exclusive] += offset - self.n_pool_pages
            parts.append(t.exclusive_pages)
            tables.append(table)
            offset += t.n_exclusive_pages
        return np.concatenate(parts), tables

    def stacked_coded(self, names: list[str]) -> CodedPages:
        """`stacked_pages` of a coded plan as stored: codes and bases in the plan's format."""
        if self.coded is None:
            raise ValueError("the plan's pages are float32, not SmartDeal-coded")
        parts = [self.coded] + [self.task(n).coded for n in names if self.task(n).n_exclusive_pages]
        return CodedPages(
            np.concatenate([c.codes for c in parts]),
            np.concatenate([c.bases for c in parts]),
            self.coded.format,
        )

    def summary(self) -> str:
        n_weights = sum(t.layout.n_weights for t in self.tasks.values())
        stored = self.pool_bytes + self.page_table_bytes + self.exclusive_bytes
        lines = [
            f"page size {self.page_size}, pool {self.n_pool_pages} pages "
            f"({self.pool_bytes} B), {len(self.tasks)} tasks, {n_weights} weights: "
            f"{4 * n_weights} B as float32, {stored} B stored with page tables and exclusive "
            f"pages ({4 * n_weights / max(1, stored):.2f}x)"
        ]
        for name, t in self.tasks.items():
            lines.append(
                f"  {name}: {t.layout.n_weights} weights in {len(t.layout.spans)} tensors, "
                f"{t.layout.n_pages} pages ({t.n_exclusive_pages} exclusive)"
            )
        return "\n".join(lines)


def layout_of(task: HasWeights, page_size: int, page_aligned: bool = False) -> PageLayout:
    weights = {n: (tuple(w.shape), str(w.dtype)) for n, w in task.weights.items()}
    return PageLayout.from_weights(
        weights, page_size, task.name, weight_alignment(page_size, page_aligned)
    )


def check_unique_names(names: list[str]) -> None:
    seen, dupes = set(), []
    for n in names:
        if n in seen:
            dupes.append(n)
        seen.add(n)
    if dupes:
        raise ValueError(f"duplicate task names: {sorted(set(dupes))}")
