"""SmartDeal (seeds C): each weight block A ~ C @ B, C sparse with power-of-two entries, B a
small dense 3x3 basis; and SmartDeal's storage accounting.

numpy and torch, no TVM. Covered (seeds C.1): 3x3 conv filters as (3 cin) x 3 matrices in
blocks of at most 64 input channels (192 rows); 1-D convs with kernel 3 as cin x 3 matrices,
same blocking; FC and 1x1 conv rows zero-padded to a multiple of 3, in blocks of at most 171
rows. Anything else (other kernel sizes, biases, norms) stays dense and is reported as such.
SmartDeal pages as stored are `coded_pages`; encoding and training them is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coded_pages import (
    CodedPages,
    CodeFormat,
    check_coded_page_size,
    decode_codes,
    encode_codes,
    formula_bits,
    stored_bases,
)

MAX_C = 32.0  # |C| <= 2^5
DELTA = 1e-3  # |C| below this is pruned to zero (SED's sparsify step)
CONV_BLOCK_CHANNELS = 64
FC_BLOCK_ROWS = 171  # 513 weights per block, as SmartDeal's table for 512-wide rows


def quantize_pow2(c: np.ndarray, max_c: float = MAX_C) -> np.ndarray:
    """Nonzeros snapped to the nearer (in linear distance) of their two bracketing powers of
    two, signs kept, clipped to |c| <= max_c; zeros stay zero (seeds C.2 step 1)."""
    magnitude = np.abs(c)
    nonzero = magnitude > 0
    low = np.zeros_like(c)
    low[nonzero] = 2.0 ** np.floor(np.log2(magnitude[nonzero]))
    snapped = np.where(magnitude - low <= 2 * low - magnitude, low, 2 * low)
    return np.sign(c) * np.minimum(snapped, max_c) * nonzero


# the widest code format SmartDeal pages can need: every exponent from DELTA's to MAX_C's
WIDEST_FORMAT = CodeFormat.of(encode_codes(quantize_pow2(np.array([DELTA, MAX_C]))))


@dataclass
class BlockFit:
    c: np.ndarray  # [m, 3] power-of-two coefficients (0 where pruned)
    b: np.ndarray  # [3, 3] basis
    errors: list[float]  # ||A - C B||_F of each iterate, in order


def decompose_block(
    a: np.ndarray,
    iterations: int = 30,
    delta: float = DELTA,
    max_c: float = MAX_C,
    tol: float = 1e-10,
) -> BlockFit:
    """SmartDeal's SED loop on one block A [m, 3]: start B = I, C = A; repeat: quantize C, stop
    when it no longer changes, least-squares B, least-squares C, zero |c| < delta. Finally
    quantize C and refit B. Returns the iterate with the smallest error (the loop itself is not
    monotone)."""
    a = np.asarray(a, np.float64)
    b = np.eye(3)
    c = a.copy()
    previous = None
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    errors = []

    def consider(cq: np.ndarray, basis: np.ndarray) -> None:
        nonlocal best
        error = float(np.linalg.norm(a - cq @ basis))
        errors.append(error)
        if best is None or error < best[0]:
            best = (error, cq.copy(), basis.copy())

    for _ in range(iterations):
        cq = quantize_pow2(c, max_c)
        consider(cq, b)
        if previous is not None and np.linalg.norm(cq - previous) <= tol:
            break
        previous = cq
        b = np.linalg.lstsq(cq, a, rcond=1e-10)[0]
        c = np.linalg.lstsq(b.T, a.T, rcond=1e-10)[0].T
        c[np.abs(c) < delta] = 0.0
    cq = quantize_pow2(c, max_c)
    b = np.linalg.lstsq(cq, a, rcond=1e-10)[0]
    consider(cq, b)
    _, c_best, b_best = best
    return BlockFit(c_best.astype(np.float32), b_best.astype(np.float32), errors)


@dataclass
class DecomposedWeight:
    """A weight as blocks: `blocks[i]` approximates rows of `matrix(weight)`; `kind` says how the
    weight was cut ("conv3x3", "conv1d3", "rows")."""

    name: str
    shape: tuple[int, ...]
    kind: str
    fits: list[BlockFit]
    pad: int  # zero columns appended to each row ("rows" kind)

    def reconstruct(self) -> np.ndarray:
        parts = np.concatenate([f.c @ f.b for f in self.fits])
        if self.kind == "rows":
            out, n_in = self.shape[0], int(np.prod(self.shape[1:]))
            rows = parts.reshape(out, -1)[:, :n_in]
            return rows.reshape(self.shape).astype(np.float32)
        return parts.reshape(self.shape).astype(np.float32)


def decompose_weight(name: str, w: np.ndarray, **fit_options) -> DecomposedWeight | None:
    """Blocks and fits for a weight SmartDeal covers, or None (left dense)."""
    w = np.asarray(w, np.float32)
    if w.ndim == 4 and w.shape[2:] == (3, 3):
        kind, per_filter = "conv3x3", w.reshape(w.shape[0], -1, 3)  # (cin*3) x 3
        rows_per_block = 3 * CONV_BLOCK_CHANNELS
    elif w.ndim == 3 and w.shape[2] == 3:
        kind, per_filter = "conv1d3", w  # cin x 3
        rows_per_block = 3 * CONV_BLOCK_CHANNELS
    elif w.ndim == 2 or (w.ndim in (3, 4) and all(d == 1 for d in w.shape[2:])):
        flat = w.reshape(w.shape[0], -1)
        pad = -flat.shape[1] % 3
        per_filter = np.pad(flat, ((0, 0), (0, pad))).reshape(w.shape[0], -1, 3)
        fits = [
            decompose_block(block, **fit_options)
            for rows in per_filter
            for block in _blocks(rows, FC_BLOCK_ROWS)
        ]
        return DecomposedWeight(name, w.shape, "rows", fits, pad)
    else:
        return None
    fits = [
        decompose_block(block, **fit_options)
        for rows in per_filter
        for block in _blocks(rows, rows_per_block)
    ]
    return DecomposedWeight(name, w.shape, kind, fits, 0)


def _blocks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def storage_bits(weights: list[DecomposedWeight]) -> int:
    """SmartDeal's formula (seeds C.5): nnz(C) * b_C + numel(C) (1-bit mask) + 32 numel(B), with
    b_C = ceil(log2(#distinct nonzero |C|)) + 1 sign bit."""
    cs = np.concatenate([f.c.reshape(-1) for w in weights for f in w.fits])
    return formula_bits(cs, sum(f.b.size for w in weights for f in w.fits))


def stored_bytes(weights: list[DecomposedWeight]) -> int:
    """What we actually store: one int8 code per C entry (sign + exponent, 0 = zero) and each
    basis as float32."""
    return sum(f.c.size + 4 * f.b.size for w in weights for f in w.fits)


@dataclass
class SmartDealReport:
    decomposed: list[DecomposedWeight]
    dense: list[str]  # weights left dense (kind not covered)
    dense_elems: int

    @property
    def formula_bytes(self) -> float:
        """SmartDeal's formula for the decomposed weights + the dense ones as float32."""
        return storage_bits(self.decomposed) / 8 + 4 * self.dense_elems

    @property
    def stored_bytes(self) -> int:
        return stored_bytes(self.decomposed) + 4 * self.dense_elems


def prune_rows(w: np.ndarray, fraction: float, group: int = 32) -> np.ndarray:
    """SmartDeal's structured sparsity (seeds C.3, "population" rule): output channels in groups
    of `group`; each row (input channel x kernel row for 3x3 convs, input channel for k=3 1-D
    and 1x1 convs) scored by its L1 norm summed over the group's filters; the lowest-scoring
    `fraction` of rows zeroed in every filter of the group."""
    w = np.asarray(w, np.float32)
    if w.ndim == 4 and w.shape[2:] == (3, 3):
        rows = w.reshape(w.shape[0], -1, 3)
    elif (w.ndim == 3 and w.shape[2] == 3) or (w.ndim == 4 and w.shape[2:] == (1, 1)):
        rows = w.reshape(w.shape[0], w.shape[1], -1)
    else:
        raise ValueError(
            f"structured row sparsity covers 3x3 and 1x1 convs and k=3 1-D convs, not a weight "
            f"of shape {w.shape}"
        )
    if not 0 <= fraction < 1:
        raise ValueError(f"the fraction of rows to prune must be in [0, 1), got {fraction}")
    out = rows.copy()
    n_drop = int(round(fraction * rows.shape[1]))
    for start in range(0, rows.shape[0], group):
        score = np.abs(rows[start : start + group]).sum(axis=(0, 2))
        out[start : start + group, np.argsort(score, kind="stable")[:n_drop]] = 0.0
    return out.reshape(w.shape)


def smartdeal_weights(
    weights: dict[str, np.ndarray],
    row_fractions: dict[str, float] | None = None,
    **fit_options,
) -> tuple[dict[str, np.ndarray], SmartDealReport]:
    """Every covered weight replaced by its reconstruction C @ B (after `prune_rows` with its
    fraction in `row_fractions`, SmartDeal's per-layer list); the others kept (and named in the
    report). Biases (1-D) are never decomposed."""
    row_fractions = row_fractions or {}
    unknown = sorted(set(row_fractions) - set(weights))
    if unknown:
        raise ValueError(f"row fractions for {unknown}, which are not weights here")
    out, decomposed, dense, dense_elems = {}, [], [], 0
    for name, w in weights.items():
        if name in row_fractions:
            w = prune_rows(w, row_fractions[name])
        d = decompose_weight(name, w, **fit_options) if np.ndim(w) >= 2 else None
        if d is None:
            out[name] = np.asarray(w, np.float32)
            dense.append(name)
            dense_elems += int(np.size(w))
        else:
            out[name] = d.reconstruct()
            decomposed.append(d)
    return out, SmartDealReport(decomposed, dense, dense_elems)


def train_then_project(
    model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    rounds: int = 3,
    iterations: int = 100,
    lr: float = 1e-3,
    batch_size: int = 100,
    seed: int = 0,
    row_fractions: dict[str, float] | None = None,
):
    """SmartDeal's recovery (seeds C.4, inference path): rounds of dense training followed by
    projection of every covered weight onto C @ B (rows pruned by `row_fractions` first); the
    projected model with the best **validation** accuracy is kept (round 0: projection of the
    given weights). Returns the model (with projected weights), its report, and the validation
    accuracy of each round."""
    import torch

    from .objectives import accuracy
    from .training import minibatch_steps, model_outputs

    def project() -> SmartDealReport:
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        projected, report = smartdeal_weights(weights, row_fractions)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in projected.items()})
        return report

    def val_accuracy() -> float:
        return accuracy(model_outputs(model, val[0], batch_size=len(val[0])), val[1])

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    report = project()
    history = [val_accuracy()]
    best = (history[0], {k: v.clone() for k, v in model.state_dict().items()}, report)
    for _ in range(rounds):
        dense_training = minibatch_steps(
            torch.optim.Adam(model.parameters(), lr=lr),
            lambda idx: torch.nn.functional.cross_entropy(model(x[idx]), y[idx]),
            len(y),
            iterations,
            batch_size,
            rng,
            model,
            eval_every=iterations,  # the round is evaluated after its projection
        )
        for _ in dense_training:
            pass
        report = project()
        history.append(val_accuracy())
        if history[-1] > best[0]:
            best = (history[-1], {k: v.clone() for k, v in model.state_dict().items()}, report)
    model.load_state_dict(best[1])
    return model.eval(), best[2], history


def encode_pages(pages: np.ndarray, **fit_options) -> CodedPages:
    """SED (`decompose_block`) on every page seen as a (P/3) x 3 block."""
    n, p = pages.shape
    check_coded_page_size(p)
    fits = [decompose_block(page.reshape(-1, 3), **fit_options) for page in pages]
    codes = np.stack([encode_codes(f.c).reshape(p) for f in fits])
    return CodedPages(codes, stored_bases(np.stack([f.b for f in fits])))


def coded_to_latent(coded: CodedPages) -> np.ndarray:
    """The trainable form [N, P + 9]: each page's coefficients C, then its basis."""
    n = len(coded.codes)
    bases = coded.bases.reshape(n, 9).astype(np.float32)
    return np.concatenate([decode_codes(coded.codes), bases], axis=1)


def decode_latent(latent, delta: float = DELTA, max_c: float = MAX_C):
    """Pages [N, P] from a latent [N, P + 9] (torch): C projected to powers of two (zero below
    `delta`, clipped to `max_c`) times each page's basis rounded to float16 as stored, both
    with a straight-through gradient."""
    c, b = latent[:, :-9], latent[:, -9:]
    c = c + (_project_pow2(c, delta, max_c) - c).detach()
    b = b + (b.half().float() - b).detach()
    n, p = c.shape
    return (c.reshape(n, p // 3, 3) @ b.reshape(n, 3, 3)).reshape(n, p)


def latent_to_coded(latent: np.ndarray, delta: float = DELTA, max_c: float = MAX_C) -> CodedPages:
    """The stored form of a trained latent: the same projection as `decode_latent`."""
    import torch

    c = _project_pow2(torch.from_numpy(np.ascontiguousarray(latent[:, :-9])), delta, max_c)
    bases = stored_bases(np.ascontiguousarray(latent[:, -9:]).reshape(-1, 3, 3))
    return CodedPages(encode_codes(c.numpy()), bases)


def _project_pow2(c, delta: float, max_c: float):
    """`quantize_pow2` in torch, after zeroing |c| < delta (SED's sparsify step)."""
    import torch

    magnitude = c.abs()
    kept = magnitude >= delta
    low = torch.exp2(torch.floor(torch.log2(torch.where(kept, magnitude, torch.ones_like(c)))))
    snapped = torch.where(magnitude - low <= 2 * low - magnitude, low, 2 * low)
    return torch.sign(c) * torch.clamp(snapped, max=max_c) * kept
