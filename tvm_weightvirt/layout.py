"""Page layout: a task's weights <-> its flat weight vector <-> fixed-size pages."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SUPPORTED_DTYPES = ("float32",)
# Each weight starts on a 64-byte boundary (16 float32): a materialized weight buffer can then
# hand out every weight as a zero-copy view, which TVM accepts only 64-byte aligned.
ALIGN_ELEMS = 16


@dataclass(frozen=True)
class WeightSpan:
    """One weight's place in a task's flat weight vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset_elems: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def end_elems(self) -> int:
        return self.offset_elems + self.numel


@dataclass(frozen=True)
class PageLayout:
    """Where each weight of one task lives in its flat vector, cut into pages of `page_size`.

    Order: the weights are laid out in the order of the task function's weight parameters. For
    torch models that is `named_parameters()` order (each weight followed by its bias, as in
    NWV), then the buffers the graph reads (e.g. batch-norm running statistics); for ONNX models
    it is the order in which the graph first uses each weight. Each weight starts at a multiple
    of `align_elems` (zeros in between; NWV packs them back to back, `align_elems=1`). The last
    page is zero-padded.
    """

    spans: tuple[WeightSpan, ...]
    page_size: int
    align_elems: int = ALIGN_ELEMS

    @staticmethod
    def from_weights(
        weights: dict[str, tuple[tuple[int, ...], str]],
        page_size: int,
        task: str = "?",
        align_elems: int = ALIGN_ELEMS,
    ) -> PageLayout:
        """Lay out `{name: (shape, dtype)}` in dict order."""
        check_page_size(page_size)
        bad = [f"'{n}' ({d})" for n, (_, d) in weights.items() if d not in SUPPORTED_DTYPES]
        if bad:
            raise ValueError(
                f"task '{task}': weights {', '.join(bad)} are not float32; "
                f"pages hold only {SUPPORTED_DTYPES}"
            )
        if align_elems <= 0:
            raise ValueError(f"alignment must be > 0 weights, got {align_elems}")
        spans, offset = [], 0
        for name, (shape, dtype) in weights.items():
            offset = -(-offset // align_elems) * align_elems
            span = WeightSpan(name, tuple(int(d) for d in shape), dtype, offset)
            spans.append(span)
            offset = span.end_elems
        return PageLayout(tuple(spans), page_size, align_elems)

    @property
    def n_weights(self) -> int:
        """The task's weights (elements), without any padding."""
        return sum(s.numel for s in self.spans)

    @property
    def n_elems(self) -> int:
        """Length of the flat vector up to the last weight (alignment gaps included)."""
        return self.spans[-1].end_elems if self.spans else 0

    @property
    def n_pages(self) -> int:
        return -(-self.n_elems // self.page_size)

    @property
    def page_aligned(self) -> bool:
        """Every weight starts on a page boundary (what zero-copy kernels need)."""
        return all(s.offset_elems % self.page_size == 0 for s in self.spans)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.spans]

    def span(self, name: str) -> WeightSpan:
        for s in self.spans:
            if s.name == name:
                return s
        raise KeyError(f"no weight '{name}' in layout (has {self.names})")

    def flatten(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        """Weights -> flat vector of length n_pages * page_size (zero-padded)."""
        flat = np.zeros(self.n_pages * self.page_size, dtype=np.float32)
        for s in self.spans:
            w = np.asarray(weights[s.name])
            if tuple(w.shape) != s.shape:
                raise ValueError(f"weight '{s.name}': expected shape {s.shape}, got {w.shape}")
            flat[s.offset_elems : s.end_elems] = w.reshape(-1)
        return flat

    def to_pages(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        """Weights -> pages [n_pages, page_size] (NWV A.1)."""
        return self.flatten(weights).reshape(self.n_pages, self.page_size)

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Flat vector (padded or not) -> weights, copies in their shapes."""
        return {
            s.name: np.array(flat[s.offset_elems : s.end_elems], dtype=s.dtype).reshape(s.shape)
            for s in self.spans
        }

    def to_json(self) -> list[dict]:
        return [
            {"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "offset": s.offset_elems}
            for s in self.spans
        ]

    @staticmethod
    def from_json(entries: list[dict], page_size: int, align_elems: int) -> PageLayout:
        spans = tuple(
            WeightSpan(e["name"], tuple(e["shape"]), e["dtype"], e["offset"]) for e in entries
        )
        layout = PageLayout(spans, page_size, align_elems)
        expected = PageLayout.from_weights(
            {s.name: (s.shape, s.dtype) for s in spans}, page_size, align_elems=align_elems
        )
        if layout != expected:
            raise ValueError(
                f"offsets are not those of the weights in order, aligned to {align_elems}"
            )
        return layout


def weight_alignment(page_size: int, page_aligned: bool) -> int:
    """The alignment of a layout whose weights start on pages (`page_aligned`) or not; either
    way a multiple of ALIGN_ELEMS (for the materialized buffer's views)."""
    return math.lcm(page_size, ALIGN_ELEMS) if page_aligned else ALIGN_ELEMS


def check_page_size(page_size: int) -> None:
    if not isinstance(page_size, (int, np.integer)) or isinstance(page_size, bool):
        raise ValueError(f"page size must be an integer, got {page_size!r}")
    if page_size <= 0:
        raise ValueError(f"page size must be > 0 weights, got {page_size}")
