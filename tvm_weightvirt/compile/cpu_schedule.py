"""Default CPU schedules for the kernels that hold the time of a model at batch 1: dense
layers and convolutions whose weights are read with the output channel last.

TVM's default llvm pipeline leaves every kernel unscheduled (scalar loops in the order
legalization wrote them). `OutputChannelVectors` gives a kernel with one reduction over a weight
`W[..., o]` (a dense layer after its weight transpose, a convolution after
`ConvWeightsOutputChannelsLast`) the classic register-blocked loop nest:

    for the other output positions (in blocks of rows):
        acc[rows][o-vectors] = 0                          # registers
        for each reduction index r:                       # k, or (ci, ky, kx)
            acc[row][o-vector] += input[row, r] * W[r, o-vector]   # broadcast x vector FMA
        output[..., o, ...] = epilogue(acc)               # bias, activation fused in

so every weight vector is loaded once per block of rows and every input value once per vector
of output channels. The block of rows is a rectangle of the two innermost other output
dimensions (a convolution's h x w tile: 1 x 4 rows x 2 vectors at 56 x 56, 1 x 7 rows x 2 vectors at
7 x 7; `_register_tile` picks the most multiply-adds per load). A kernel of at
least `MIN_PARALLEL_MACS` runs its blocks on TVM's thread pool (`TVM_NUM_THREADS` threads; TVM
takes half the logical CPUs by default on x86), a smaller one on one thread (a fork/join costs
more than it saves). A convolution's zero padding stays a copy of its own, so that no bounds
test runs inside the multiply-adds. The reduction runs in the same order as the unscheduled
kernel (r in order, one accumulator per output), so the sums are bitwise those of TVM's default
kernels (and of the Cortex-M build's C) unless LLVM contracts a multiply-add into an FMA (it
does where the target has FMA).

`TransposeTiles` schedules the weight permutes a context switch runs (`LiftWeightTransforms`).
A kernel neither rule fits (pooling, a kernel with symbolic shapes, ...) keeps TVM's default.
`DEFAULT_RULES` is what every llvm build applies (`default_pipeline`), and what tuning times as
each kernel's baseline.

`ScalarAccumulators` (`MCU_RULES`) is the same loop nest for TVM's C target, which the Cortex-M
builds compile with the part's gcc: no vectors, a tile of output channels x output positions
in the FPU's registers, weights as the graph has them (OIHW, dense `W[o, k]`). Without it TVM's
C reads and writes every sum in memory at each multiply-add and tests for the first one inside
the reduction (digits: 14.7 instructions per multiply-add on an M4, 3.2 with it).
"""

from __future__ import annotations

import itertools
import logging
import math

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.target import Target
from tvm.tirx import IndexMap

log = logging.getLogger(__name__)

MAX_ACCUMULATORS = 12  # vector registers holding sums (16 on AVX2 / AVX-512 / NEON)
MAX_ACCUMULATORS_7 = 14  # where 12 gives fewer multiply-adds than loads (see _register_tile)
MAX_SCALAR_ACCUMULATORS = 12  # sums in the Cortex-M FPU's 32 single registers
MAX_UNROLLED_WINDOW = 7  # a kernel row of up to 7 taps unrolled in the C target's sums
MIN_PARALLEL_MACS = 1 << 20  # a kernel of fewer multiply-adds runs on one thread


class _CPURule(dl.ScheduleRule):
    """A rule for the targets of kind `kind`: `schedule` raises `_DoesNotApply` where the
    kernel is not one it fits, and the kernel keeps TVM's default. So it does where a schedule
    primitive fails, however it fails (a `ScheduleError`, or an `InternalError` from a check
    inside TVM), and where the scheduled function is not well formed: a default schedule never
    breaks a build."""

    kind = "llvm"

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != self.kind:
            return None
        try:
            sch = self.schedule(func, target)
        except _DoesNotApply:
            return None
        except (s_tir.ScheduleError, tvm.error.InternalError) as err:
            log.debug("%s does not fit %s: %s", type(self).__name__, func.attrs, err)
            return None
        if not s_tir.analysis.verify_well_formed(sch.mod, assert_mode=False):
            return None
        return sch

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        raise NotImplementedError


class OutputChannelVectors(_CPURule):
    """See the module's docstring. Applies to a PrimFunc whose blocks are: spatial producers
    that can be inlined (padding), one reduction block, then elementwise consumers; the
    reduction reads a buffer whose last index is one of the block's spatial iterators and
    whose other indices use a reduction iterator (the weight)."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        return _schedule(func, target)


class TransposeTiles(_CPURule):
    """A kernel that only permutes a tensor's dimensions (the weight transposes and conv
    weight permutes a context switch runs, see `LiftWeightTransforms`): square tiles of
    `lanes` x `lanes` elements, whose reads stay in a few cache lines, written one vector at a
    time. A copy that keeps the innermost dimension is vectorized as is."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        return _schedule_transpose(func, target)


class ScalarAccumulators(_CPURule):
    """The C target's rule (the Cortex-M builds: scalar FPU, 32 single registers on an M4/M7).
    A kernel with one reduction block (a convolution, a dense layer, a pooling) keeps a tile
    of its sums in registers: `n` output channels (the weight's rows) x a rectangle of output
    positions, at most `MAX_SCALAR_ACCUMULATORS`, chosen as `_register_tile` does (each step
    loads one weight per channel and one input per position); the sums start at zero outside
    the reduction loop, the epilogue (bias, activation) is applied as each tile is stored, and
    producers other than a zero padding are inlined. The reduction order is the unscheduled
    kernel's, so the sums are bitwise those of TVM's default C."""

    kind = "c"

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
        return _schedule_scalar(func)


DEFAULT_RULES = (OutputChannelVectors(), TransposeTiles())
MCU_RULES = (ScalarAccumulators(),)


class _DoesNotApply(Exception):
    pass


def _schedule_transpose(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if len(blocks) != 1:
        raise _DoesNotApply
    block = sch.get(blocks[0])
    loops = sch.get_loops(blocks[0])
    iters = list(block.iter_vars)
    if (
        len(block.reads) != 1
        or len(iters) < 2
        or len(loops) != len(iters)
        or any(iv.iter_type != tirx.IterVar.DataPar for iv in iters)
    ):
        raise _DoesNotApply
    _check_static(iters)
    (read,) = block.reads
    (write,) = block.writes
    if len(write.region) != len(iters) or not all(
        r.min.same_as(iv.var) for r, iv in zip(write.region, iters)
    ):
        raise _DoesNotApply  # the output written in loop order
    last_read = read.region[-1].min
    inner = [i for i, iv in enumerate(iters) if iv.var.same_as(last_read)]
    if len(inner) != 1 or any(not isinstance(r.min, tirx.Var) for r in read.region):
        raise _DoesNotApply  # a pure permutation
    lanes = vector_lanes(target)
    (a,) = inner  # the loop that walks the input's rows
    b = len(iters) - 1  # the loop that walks the output's rows
    if a == b:
        _, lane = sch.split(loops[b], [None, _largest_divisor(int(iters[b].dom.extent), lanes)])
        sch.vectorize(lane)
        return sch
    a_out, a_in = sch.split(loops[a], [None, _largest_divisor(int(iters[a].dom.extent), lanes)])
    b_out, b_in = sch.split(loops[b], [None, _largest_divisor(int(iters[b].dom.extent), lanes)])
    others = [loop for i, loop in enumerate(loops) if i not in (a, b)]
    sch.reorder(*others, a_out, b_out, a_in, b_in)
    sch.vectorize(b_in)
    return sch


def vector_lanes(target: Target) -> int:
    """float32 lanes of the target's vector registers: 16 with AVX-512, 8 with AVX, else 4
    (SSE, NEON); a target without `mcpu` is compiled for this machine's CPU."""
    features = tvm.target.codegen.llvm_get_cpu_features(target)
    if not features:
        return max(4, int(tvm.target.codegen.llvm_get_vector_width(target)) // 32)
    return 16 if "avx512f" in features else 8 if "avx" in features else 4


class _Reduction:
    """A kernel's one reduction block, its producers inlined but for paddings (kept as stages
    of their own, so that no bounds test runs inside the multiply-adds), its elementwise
    consumers, and its loops: one per iterator, spatial first (as legalization writes them)."""

    def __init__(self, sch: s_tir.Schedule) -> None:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if _is_reduction(sch, b)]
        if len(reductions) != 1:
            raise _DoesNotApply
        (self.rv,) = reductions
        position = [sch.get(b).name_hint for b in blocks].index(sch.get(self.rv).name_hint)
        self.paddings = [b for b in blocks[:position] if _is_padding(sch.get(b))]
        for producer in blocks[:position]:
            if producer not in self.paddings:
                sch.compute_inline(producer)
        self.consumers = blocks[position + 1 :]
        self.block = sch.get(self.rv)
        iters = self.block.iter_vars
        self.spatial = [iv for iv in iters if iv.iter_type == tirx.IterVar.DataPar]
        self.reduce = [iv for iv in iters if iv.iter_type == tirx.IterVar.CommReduce]
        self.loops = sch.get_loops(self.rv)
        if len(self.loops) != len(iters) or any(
            not iv.same_as(iters[i]) for i, iv in enumerate(self.spatial)
        ):
            raise _DoesNotApply
        _check_static(iters)

    def fuse_epilogue(self, sch: s_tir.Schedule, loop) -> s_tir.Schedule:
        """The consumers into the store of the sums: each but the last inlined into those that
        read it, then the last into the store (inlining them into the store one by one fails
        where a later one reads an earlier one's output twice, as SiLU's `x * sigmoid(x)`).
        Where TVM cannot inline the last (it fails on some SiLU epilogues), it runs under `loop`,
        over the tile just stored."""
        if not self.consumers:
            return sch
        for consumer in self.consumers[:-1]:
            sch.compute_inline(consumer)
        inlined = sch.copy()
        try:
            inlined.reverse_compute_inline(self.consumers[-1])
            return inlined
        except (s_tir.ScheduleError, tvm.error.InternalError):
            sch.reverse_compute_at(self.consumers[-1], loop)
            return sch

    def tile(self, sch: s_tir.Schedule, channel: int | None, factors, rows_at, rows):
        """Split the spatial loop `channel` into [outer, *factors] and each of `rows_at` into
        [outer, its `rows`], and order the loops: the outer ones, the reduction, the rows,
        the channel's. Returns (outer loops, row loops, channel loops, reduction loops)."""
        outer, inner_rows, inner_channel = [], [], []
        for i, loop in enumerate(self.loops[: len(self.spatial)]):
            if i == channel:
                o, *inner_channel = sch.split(loop, [None, *factors])
                outer.append(o)
            elif i in rows_at:
                o, r = sch.split(loop, [None, rows[rows_at.index(i)]])
                outer.append(o)
                inner_rows.append(r)
            else:
                outer.append(loop)
        reduction_loops = list(self.loops[len(self.spatial) :])
        sch.reorder(*outer, *reduction_loops, *inner_rows, *inner_channel)
        return outer, inner_rows, inner_channel, reduction_loops

    def rows_at(self, channel: int | None) -> list[int]:
        """The (up to) two innermost spatial iterators other than `channel` with extent > 1."""
        spatial = self.spatial
        return [i for i in range(len(spatial)) if i != channel and _extent(spatial[i]) > 1][-2:]


def _schedule(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    kernel = _Reduction(sch)
    reduction, paddings = kernel.rv, kernel.paddings
    block, spatial, reduce = kernel.block, kernel.spatial, kernel.reduce
    vector = _vector_iterator(block, spatial, reduce)
    v = spatial.index(vector)
    extent = int(vector.dom.extent)
    lanes = _largest_divisor(extent, vector_lanes(target))
    rows_at = kernel.rows_at(v)
    n_vectors, rows = _register_tile(extent // lanes, [_extent(spatial[i]) for i in rows_at])

    outer, inner_rows, inner_vectors, reduction_loops = kernel.tile(
        sch, v, [n_vectors, lanes], rows_at, rows
    )
    inner = inner_rows + inner_vectors
    outer = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    parallel = _multiply_adds(block) >= MIN_PARALLEL_MACS
    if parallel:
        sch.parallel(outer)

    accumulate = sch.cache_write(reduction, 0, "local")
    # the accumulators' output channels innermost: each vector of them is one register
    (write,) = sch.get(reduction).writes
    channel = [_uses(r.min, vector.var) for r in write.region].index(True)
    ndim = len(write.region)
    sch.transform_layout(
        reduction,
        ("write", 0),
        IndexMap.from_func(
            lambda *i: [*i[:channel], *i[channel + 1 :], i[channel]],
            ndim=ndim,
        ),
    )
    sch.reverse_compute_at(accumulate, outer)
    sch = kernel.fuse_epilogue(sch, outer)
    *unrolled, lane_loop = sch.get_loops(reduction)[-len(inner) :]
    sch.vectorize(lane_loop)  # before the init is split off: a reduction block may be vectorized
    for loop in unrolled:
        sch.unroll(loop)
    sch.decompose_reduction(reduction, reduction_loops[0])  # the init keeps the loop kinds
    for padding in paddings:
        *rows_of_padding, _ = sch.get_loops(padding)
        if parallel and rows_of_padding:
            sch.parallel(sch.fuse(*rows_of_padding))
    return sch


def _schedule_scalar(func: tirx.PrimFunc) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    kernel = _Reduction(sch)
    spatial = kernel.spatial
    channel = _weight_rows(kernel.block, spatial, kernel.reduce)
    rows_at = kernel.rows_at(channel)
    channels = 1 if channel is None else _extent(spatial[channel])
    n, rows = _register_tile(
        channels, [_extent(spatial[i]) for i in rows_at], (MAX_SCALAR_ACCUMULATORS,)
    )
    outer, inner_rows, inner_channels, reduction_loops = kernel.tile(
        sch, channel, [n], rows_at, rows
    )
    # "global", not "local": TVM's C lowering puts a small global allocation on the stack (a
    # C array the compiler keeps in registers) and a "local" one in a workspace it allocates
    accumulate = sch.cache_write(kernel.rv, 0, "global")
    sch.reverse_compute_at(accumulate, outer[-1])
    sch = kernel.fuse_epilogue(sch, outer[-1])
    for loop in inner_rows + inner_channels:
        sch.unroll(loop)
    # a sum's innermost window loop (a kernel row) unrolled too; not a max: TVM's C codegen
    # binds `max`'s operands to variables and reuses a bound load after a store to the same
    # element in straight-line code (a pooling's result would be wrong)
    if _extent(kernel.reduce[-1]) <= MAX_UNROLLED_WINDOW and isinstance(
        getattr(kernel.block.body, "value", None), tirx.Add
    ):
        sch.unroll(reduction_loops[-1])
    sch.decompose_reduction(kernel.rv, reduction_loops[0])
    return sch


def _weight_rows(block, spatial, reduce) -> int | None:
    """The position among `spatial` of the iterator that indexes the rows of a read whose other
    indices use a reduction iterator: the output channel of a weight read `W[o, ...]` (OIHW
    convolutions, dense layers `x @ W.T`). None where no read has that form (a pooling)."""
    reduce_vars = [iv.var for iv in reduce]
    for region in block.reads:
        indices = [r.min for r in region.region]
        if len(indices) < 2 or not isinstance(indices[0], tirx.Var):
            continue
        rows = [i for i, iv in enumerate(spatial) if iv.var.same_as(indices[0])]
        if rows and any(_uses(x, v) for x in indices[1:] for v in reduce_vars):
            return rows[0]
    return None


def _extent(iv) -> int:
    return int(iv.dom.extent)


def _register_tile(
    vectors: int,
    extents: list[int],
    limits: tuple[int, ...] = (MAX_ACCUMULATORS, MAX_ACCUMULATORS_7),
) -> tuple[int, list[int]]:
    """How many vectors of output channels (dividing `vectors`) and which rectangle of rows
    (each side dividing its `extents`) one block of accumulators holds: the most multiply-adds
    per load (each step loads one vector per vector and broadcasts one input per row), then
    the larger block. At most `MAX_ACCUMULATORS` sums, `MAX_ACCUMULATORS_7` where that gives
    fewer multiply-adds than loads (a 7 x 7 map: 2 vectors x 7 rows); `limits`: those bounds,
    tried in order."""
    best = None
    for most in limits:
        for n in _divisors(vectors, most):
            for rows in itertools.product(*[_divisors(e, most // n) for e in extents]):
                r = math.prod(rows)
                if n * r <= most:
                    score = (n * r / (n + r), n * r)
                    if best is None or score > best[0]:
                        best = (score, n, list(rows))
        if best[0][0] >= 1:
            break
    return best[1], best[2]


def _divisors(n: int, at_most: int) -> list[int]:
    return [d for d in range(1, min(n, at_most) + 1) if n % d == 0]


def _is_padding(block) -> bool:
    """A producer that pads the input of a sliding window: kept as its own stage (a copy)
    rather than inlined, so that no bounds test runs inside the multiply-adds."""
    body = block.body
    return (
        isinstance(body, tirx.BufferStore)
        and isinstance(body.value, tvm.ir.expr.Call)
        and getattr(body.value.op, "name", "") == "prim.if_then_else"
    )


def _multiply_adds(block) -> int:
    return math.prod(int(iv.dom.extent) for iv in block.iter_vars)


def _check_static(iters) -> None:
    if not all(isinstance(iv.dom.extent, tirx.IntImm) for iv in iters):
        raise _DoesNotApply  # symbolic shapes: tiles need known extents


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _vector_iterator(block, spatial, reduce):
    """The spatial iterator that is the last index of a read that also uses a reduction
    iterator (the weight, read as vectors of output channels). Else, for a weight that the
    innermost output position does not index (depthwise and grouped convolutions, weights
    OIHW), that position, where another read (the input) has it last: the input is read as
    vectors along the rows, the weight broadcast."""
    reduce_vars = {iv.var for iv in reduce}
    spatial_vars = {iv.var: iv for iv in spatial}
    for region in block.reads:
        indices = [r.min for r in region.region]
        uses_reduce = any(_uses(i, var) for i in indices[:-1] for var in reduce_vars)
        last = indices[-1] if indices else None
        if uses_reduce and isinstance(last, tirx.Var) and last in spatial_vars:
            return spatial_vars[last]
    innermost = spatial[-1].var
    along = [r for r in block.reads if r.region and _uses(r.region[-1].min, innermost)]
    broadcast = [
        r
        for r in block.reads
        if any(_uses(i.min, var) for i in r.region for var in reduce_vars)
        and not any(_uses(i.min, innermost) for i in r.region)
    ]
    if along and broadcast:
        return spatial[-1]
    raise _DoesNotApply


def _uses(expr, var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def _largest_divisor(n: int, at_most: int) -> int:
    return _divisors(n, at_most)[-1]


def default_pipeline(target: Target) -> tvm.transform.Pass:
    """TVM's default pipeline for `target`; on llvm with `OutputChannelVectors` applied to the
    fused kernels."""
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    if target.kind.name != "llvm":
        return relax.get_default_pipeline(target)

    @tvm.transform.module_pass(opt_level=0, name="wv.cpu_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            passes = [
                *cpu.library_dispatch_passes(target),
                *cpu.legalize_passes(target),
                dl.ApplyDefaultSchedule(*DEFAULT_RULES),
                *cpu.dataflow_lower_passes(target),
                *cpu.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
