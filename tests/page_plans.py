"""Small plans whose every backend must read the same bits: two echo tasks (each returns its
weights times its inputs, so with inputs of ones it returns exactly its weights) on pages that
are shared, exclusive (level 2), SmartDeal-coded, or both. Spans start mid-page, cross pages and end
mid-page."""

from __future__ import annotations

import numpy as np

import tvm_weightvirt as wv
from tvm_weightvirt.coded_pages import CodedPages

# at page sizes 100 and 96
SHAPES = {"a": [(3, 70), (130,), (5,)], "b": [(2, 2, 40), (77,)]}


def echo_task(name: str, shapes: list[tuple[int, ...]]) -> wv.Task:
    """`main(x_0.., w_0..) = (x_0 * w_0, ...)`: with ones as inputs, the outputs are the weights."""
    from tvm import relax  # TVM's compiler: the plans alone need only numpy

    ty = [relax.TensorType(s, "float32") for s in shapes]
    xs = [relax.Var(f"x{i}", t) for i, t in enumerate(ty)]
    ws = [relax.Var(f"w{i}", t) for i, t in enumerate(ty)]
    bb = relax.BlockBuilder()
    with bb.function("main", xs + ws, attrs={"num_input": len(xs)}):
        with bb.dataflow():
            outs = [bb.emit(relax.op.multiply(x, w)) for x, w in zip(xs, ws)]
            gv = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(gv)
    rng = np.random.default_rng(len(name))
    weights = {f"w{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    return wv.Task(name, bb.get(), weights)


def shared_plan(tasks, page_size: int, page_aligned: bool = False) -> wv.PagePlan:
    """Task b's first page is task a's second: a plan with one shared page."""
    lossless = wv.PagePlan.lossless(tasks, page_size, page_aligned)
    tables = {n: t.page_table.copy() for n, t in lossless.tasks.items()}
    tables["b"][0] = tables["a"][1]
    tasks_pages = {n: wv.TaskPages(t.layout, tables[n]) for n, t in lossless.tasks.items()}
    return wv.PagePlan(page_size, lossless.pool, tasks_pages)


def exclusive_plan(tasks, page_size: int, page_aligned: bool = False) -> wv.PagePlan:
    """Task a's last two pages and task b's first are exclusive (level 2), the rest shared."""
    shared = shared_plan(tasks, page_size, page_aligned)
    pool_pages = shared.n_pool_pages
    rng = np.random.default_rng(7)
    out = {}
    for name, n_exclusive in [("a", 2), ("b", 1)]:
        t = shared.tasks[name]
        table = t.page_table.copy()
        slots = np.arange(len(table))[-n_exclusive:] if name == "a" else np.arange(n_exclusive)
        table[slots] = pool_pages + np.arange(n_exclusive)
        pages = rng.normal(size=(n_exclusive, page_size)).astype(np.float32)
        out[name] = wv.TaskPages(t.layout, table, pages)
    return wv.PagePlan(page_size, shared.pool, out)


def random_coded_pages(n: int, page_size: int, seed: int = 3) -> CodedPages:
    """Random power-of-two codes (zeros included) times random float16 bases, among them a
    subnormal and a negative zero (each case of a decoder's widening to float32)."""
    rng = np.random.default_rng(seed)
    exponents = rng.integers(-8, 6, size=(n, page_size))
    signs = rng.choice([-1, 0, 1], size=(n, page_size), p=[0.45, 0.1, 0.45])
    codes = (signs * (exponents + 64)).astype(np.int8)
    bases = rng.normal(size=(n, 3, 3)).astype(np.float16)
    bases.flat[:2] = [np.float16(3e-6), np.float16(-0.0)]
    return CodedPages(codes, bases)


def coded_plan(tasks, page_size: int) -> wv.PagePlan:
    """Every pool page SmartDeal-coded (`random_coded_pages`)."""
    shared = shared_plan(tasks, page_size)
    coded = random_coded_pages(shared.n_pool_pages, page_size)
    return wv.PagePlan.from_coded(page_size, coded, shared.tasks)


def coded_exclusive_plan(tasks, page_size: int, page_aligned: bool = False) -> wv.PagePlan:
    """`exclusive_plan`'s page tables with pool and exclusive pages SmartDeal-coded in one
    format (as packing codes them: one memory, then split)."""
    plain = exclusive_plan(tasks, page_size, page_aligned)
    counts = {name: t.n_exclusive_pages for name, t in plain.tasks.items()}
    memory = random_coded_pages(plain.n_pool_pages + sum(counts.values()), page_size)
    out, offset = {}, plain.n_pool_pages
    for name, t in plain.tasks.items():
        coded = memory.rows(offset, offset + counts[name])
        out[name] = wv.TaskPages(t.layout, t.page_table, coded=coded)
        offset += counts[name]
    return wv.PagePlan.from_coded(page_size, memory.rows(0, plain.n_pool_pages), out)


# backend -> (mode, page size, plan)
BACKENDS = {
    "relax gather (fused)": ("fused", 100, shared_plan),
    "tir gather (materialize)": ("materialize", 100, shared_plan),
    "tir gather, exclusive pages": ("materialize", 100, exclusive_plan),
    "tir gather, smartdeal pages": ("materialize", 96, coded_plan),
    "tir gather, smartdeal exclusive pages": ("materialize", 96, coded_exclusive_plan),
}


def past_uint16_ids(plan: wv.PagePlan) -> wv.PagePlan:
    """`plan` with its pool padded by zero pages to 65,537: its tables must be int32."""
    from tvm_weightvirt.plan import PAGE_TABLE_IDS_UINT16

    padding = np.zeros((PAGE_TABLE_IDS_UINT16 + 1 - plan.n_pool_pages, plan.page_size), np.float32)
    return wv.PagePlan(plan.page_size, np.concatenate([plan.pool, padding]), plan.tasks)
