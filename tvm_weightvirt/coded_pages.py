"""SmartDeal pages as stored: int8 power-of-two codes and a 3x3 basis per page (numpy only).

A page of P weights is one (P/3) x 3 matrix A = C @ B: C's entries are zero or powers of two,
stored as int8 codes (0 = zero, else sign * (exponent + 64)), B is the page's own 3x3 float32
basis. A shared page shares its basis too. Per-task bases (one per SmartDeal block) would cost
39 KB on the 5-task suite, more than the whole 16x budget (619 KB / 16 = 39 KB) before any code
is stored; per-page bases cost 36 B per pool page. Encoding pages (SED) and training them is
SmartDeal's algorithm (`smartdeal.py`); every backend decodes them as `CodedPages.decode` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def check_coded_page_size(page_size: int) -> None:
    if page_size % 3:
        raise ValueError(
            f"SmartDeal pages hold rows of 3 coefficients: the page size must be a multiple "
            f"of 3, got {page_size} (e.g. 96)"
        )


def encode_codes(c: np.ndarray) -> np.ndarray:
    """int8 codes: 0 for zero, else sign * (exponent + 64) with |c| = 2^exponent."""
    exponent = np.zeros(c.shape, np.int64)
    nonzero = c != 0
    exponent[nonzero] = np.round(np.log2(np.abs(c[nonzero]))).astype(np.int64) + 64
    return (np.sign(c).astype(np.int64) * exponent).astype(np.int8)


def decode_codes(codes: np.ndarray) -> np.ndarray:
    codes = codes.astype(np.int64)
    return np.where(codes == 0, 0.0, np.sign(codes) * 2.0 ** (np.abs(codes) - 64)).astype(
        np.float32
    )


def formula_bits(c: np.ndarray, n_basis: int) -> int:
    """SmartDeal's storage formula (seeds C.5) on coefficients `c` (values or their int8 codes:
    both have one magnitude per level) and `n_basis` basis values: nnz(C) * b_C + numel(C)
    (1-bit mask) + 32 numel(B), b_C = ceil(log2(#distinct nonzero |C|)) + 1 sign bit."""
    levels = np.unique(np.abs(c[c != 0]))
    bits_per_nonzero = math.ceil(math.log2(max(len(levels), 1))) + 1
    return int(np.count_nonzero(c) * bits_per_nonzero + c.size + 32 * n_basis)


@dataclass
class CodedPages:
    """Pages as stored: `codes` [N, P] int8 power-of-two codes of C (see `encode_codes`) and
    `bases` [N, 3, 3] float32; page i is (C_i as (P/3) x 3) @ B_i."""

    codes: np.ndarray
    bases: np.ndarray

    def decode(self) -> np.ndarray:
        """The pages' float32 weights [N, P]: `sum_k c[r, k] * b[k, j]` in float32, k = 0, 1, 2
        in that order, as the TIR gather and the C runtime compute it (each product is exact: c
        is a power of two), so every backend's pages equal these bit for bit."""
        n, p = self.codes.shape
        c = decode_codes(self.codes).reshape(n, p // 3, 3, 1)
        b = self.bases.astype(np.float32)[:, None]  # [N, 1, 3, 3]
        rows = c[:, :, 0] * b[:, :, 0]
        for k in (1, 2):
            rows = rows + c[:, :, k] * b[:, :, k]
        return rows.reshape(n, p)

    @property
    def stored_bytes(self) -> int:
        """One byte per code, four per basis value."""
        return self.codes.size + 4 * self.bases.size

    @property
    def formula_bytes(self) -> float:
        """SmartDeal's formula (seeds C.5) on these pages."""
        return formula_bits(self.codes, self.bases.size) / 8
