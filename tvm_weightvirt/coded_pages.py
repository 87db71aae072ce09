"""SmartDeal pages as stored: bit-packed power-of-two codes and a 3x3 basis per page (numpy
only).

A page of P weights is one (P/3) x 3 matrix A = C @ B: C's entries are zero or powers of two,
held as int8 codes (0 = zero, else sign * (exponent + 64)) and stored bit-packed, in the fewest
bits the pool's exponents need, in 32-bit words (`CodeFormat`); B is the page's own 3x3 basis,
stored as float16 (`BASIS_DTYPE`: 18 B a page; training sees the rounding, and every backend
widens it to float32 exactly before decoding). A shared page shares its basis too. Per-task
bases (one per SmartDeal block) would cost 39 KB on the 5-task suite, more than the whole 16x
budget (619 KB / 16 = 39 KB) before any code is stored. Encoding pages (SED) and training them
is SmartDeal's algorithm (`smartdeal.py`); every backend decodes them as `CodedPages.decode`
does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BASIS_DTYPE = np.dtype(np.float16)
# One page's 3x3 basis stored. float16 since 2026-12-01 (36 B as float32 before): at the 32x
# budget the bases were over a third of every stored page (5-bit codes: 64 B, basis 36 B).
BASIS_BYTES = 9 * BASIS_DTYPE.itemsize


def byte_code_page_bytes(page_size: int) -> int:
    """One page in the format before codes were bit-packed and bases were float16: a byte per
    code and a float32 3x3 basis (the benchmarks' "smartdeal8" sizes and counts pages so)."""
    return page_size + 9 * 4


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


def stored_bases(bases) -> np.ndarray:
    """Bases as stored: rounded to the nearest float16 (ties to even, as torch's `half()`);
    a value beyond float16's range (65,504) is refused rather than stored as infinity."""
    bases = np.asarray(bases)
    with np.errstate(over="ignore"):  # refused below, by name
        stored = bases.astype(BASIS_DTYPE)
    overflow = np.isfinite(bases) & ~np.isfinite(stored)
    if overflow.any():
        raise ValueError(
            f"a basis value of {bases[overflow].flat[0]:g} is beyond float16's range "
            f"(|b| <= 65,504): the page cannot be stored"
        )
    return stored


def formula_bits(c: np.ndarray, n_basis: int) -> int:
    """SmartDeal's storage formula (seeds C.5) on coefficients `c` (values or their int8 codes:
    both have one magnitude per level) and `n_basis` basis values: nnz(C) * b_C + numel(C)
    (1-bit mask) + 32 numel(B), b_C = ceil(log2(#distinct nonzero |C|)) + 1 sign bit."""
    levels = np.unique(np.abs(c[c != 0]))
    bits_per_nonzero = math.ceil(math.log2(max(len(levels), 1))) + 1
    return int(np.count_nonzero(c) * bits_per_nonzero + c.size + 32 * n_basis)


@dataclass(frozen=True)
class CodeFormat:
    """How a pool's codes are stored: `width` bits per code, `32 // width` codes in each
    32-bit word (LSB first; no code crosses a word, so a decoder reads one word per code),
    each page's P codes in its own row of `row_words(P)` words. Symbol 0 is zero; symbol s > 0
    is a power of two with exponent `min_exponent + (s - 1) // 2`, negative when `s - 1` is
    odd. The width is the fewest bits that hold zero and both signs of every exponent from the
    pool's smallest to its largest: `ceil(log2(2 * levels + 1))`."""

    width: int
    min_exponent: int

    @staticmethod
    def of(codes: np.ndarray) -> CodeFormat:
        magnitudes = np.abs(codes[codes != 0].astype(np.int64))
        if magnitudes.size == 0:
            return CodeFormat(1, 0)
        levels = int(magnitudes.max() - magnitudes.min()) + 1
        return CodeFormat(max(1, (2 * levels).bit_length()), int(magnitudes.min()) - 64)

    @property
    def per_word(self) -> int:
        return 32 // self.width

    def row_words(self, page_size: int) -> int:
        return -(-page_size // self.per_word)

    def row_bytes(self, page_size: int) -> int:
        return 4 * self.row_words(page_size)

    def page_bytes(self, page_size: int) -> int:
        """One page stored: its packed codes and its 3x3 basis."""
        return self.row_bytes(page_size) + BASIS_BYTES

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        """int8 codes -> symbols (uint32); every code must be in the format's range."""
        codes = codes.astype(np.int64)
        level = np.abs(codes) - 64 - self.min_exponent
        symbols = np.where(codes == 0, 0, 2 * level + 1 + (codes < 0))
        if symbols.min(initial=0) < 0 or symbols.max(initial=0) >= 1 << self.width:
            raise ValueError(
                f"codes outside the {self.width}-bit format from 2^{self.min_exponent}"
            )
        return symbols.astype(np.uint32)

    def codes(self, symbols: np.ndarray) -> np.ndarray:
        """symbols -> int8 codes."""
        s = symbols.astype(np.int64)
        magnitude = (s - 1) // 2 + self.min_exponent + 64
        return np.where(s == 0, 0, np.where((s - 1) % 2 == 1, -magnitude, magnitude)).astype(
            np.int8
        )

    def values(self) -> np.ndarray:
        """The float32 value of every symbol 0 .. 2^width - 1 (the C decode's table)."""
        return decode_codes(self.codes(np.arange(1 << self.width)))

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """int8 codes [N, P] -> packed rows [N, row_words(P)] (uint32)."""
        n, p = codes.shape
        symbols = np.zeros((n, self.row_words(p) * self.per_word), np.uint32)
        symbols[:, :p] = self.symbols(codes)
        shifts = (self.width * np.arange(self.per_word)).astype(np.uint32)
        words = symbols.reshape(n, -1, self.per_word) << shifts
        return np.bitwise_or.reduce(words, axis=2).astype(np.uint32)

    def unpack(self, packed: np.ndarray, page_size: int) -> np.ndarray:
        """packed rows [N, row_words(P)] -> int8 codes [N, P]."""
        if packed.shape[1:] != (self.row_words(page_size),) or packed.dtype != np.uint32:
            raise ValueError(
                f"packed codes {packed.dtype}{list(packed.shape)}: expected uint32 rows of "
                f"{self.row_words(page_size)} words ({page_size} codes of {self.width} bits)"
            )
        shifts = (self.width * np.arange(self.per_word)).astype(np.uint32)
        symbols = (packed[..., None] >> shifts) & np.uint32((1 << self.width) - 1)
        return self.codes(symbols.reshape(len(packed), -1)[:, :page_size])


@dataclass
class CodedPages:
    """Pages as stored: `codes` [N, P] int8 power-of-two codes of C (see `encode_codes`) and
    `bases` [N, 3, 3] float16 (`stored_bases`); page i is (C_i as (P/3) x 3) @ B_i, computed in
    float32. `format` is how the codes are stored: by default the fewest bits these codes need;
    pages coded together (a plan's pool and its exclusive pages) share one format (`rows` keeps
    it)."""

    codes: np.ndarray
    bases: np.ndarray
    format: CodeFormat | None = None

    def __post_init__(self) -> None:
        if self.bases.dtype != BASIS_DTYPE:
            raise ValueError(
                f"bases are {self.bases.dtype}: SmartDeal pages store them as {BASIS_DTYPE} "
                f"(round them with stored_bases)"
            )
        if self.format is None:
            self.format = CodeFormat.of(self.codes)
        else:
            self.format.symbols(self.codes)  # raises on a code the format cannot hold

    def rows(self, start: int, stop: int) -> CodedPages:
        """Pages `start` .. `stop - 1`, in this format."""
        return CodedPages(self.codes[start:stop], self.bases[start:stop], self.format)

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
    def packed(self) -> np.ndarray:
        """The codes as stored: packed rows [N, format.row_words(P)] (uint32)."""
        return self.format.pack(self.codes)

    @property
    def stored_bytes(self) -> int:
        """The packed codes and the bases."""
        n, p = self.codes.shape
        return n * self.format.row_bytes(p) + self.bases.nbytes

    @property
    def formula_bytes(self) -> float:
        """SmartDeal's formula (seeds C.5) on these pages (bases counted as float32, as the
        formula counts them)."""
        return formula_bits(self.codes, self.bases.size) / 8
