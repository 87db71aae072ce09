"""Add the kernel that gathers a task's pages from the pool into a contiguous weight buffer."""

from __future__ import annotations

import tvm
from tvm import te, tirx

from tvm_weightvirt.abi import CODED_GATHER_FUNC, GATHER_FUNC, GATHER_OUTPUT
from tvm_weightvirt.coded_pages import BASIS_DTYPE, CodeFormat, check_coded_page_size


class GatherOptions:
    """What a gather pass takes (`AddPageGather`, `ExclusivePageLoader`): the page size, the
    SmartDeal code format if the pages are coded, the page tables' dtype."""

    def __init__(
        self, page_size: int, coded: CodeFormat | None = None, table_dtype: str = "uint16"
    ) -> None:
        if coded is not None:
            check_coded_page_size(page_size)
        self.page_size = page_size
        self.coded = coded
        self.table_dtype = table_dtype


@tvm.transform.module_pass(opt_level=0, name="AddPageGather")
class AddPageGather(GatherOptions):
    """Add one PrimFunc `wv_gather_pages(pool, page_table, weight_pages)`:
    `weight_pages[i, j] = pool[page_table[i], j]` for any pool size S and table length n.

    Materialize mode runs it once per context switch, into one reusable buffer sized for the
    largest task; the task's weights are views of that buffer (the layout aligns each weight to
    64 bytes), so a switch costs one kernel moving the task's bytes once, and
    `task_<name>(inputs..., weights...)` runs exactly as the plain model does. Relax functions
    are left unchanged.

    With `coded` (SmartDeal pages, plan.coded), the pool is power-of-two codes packed in
    `coded`'s format, rows [S, row_words] of uint32, and 3x3 float16 bases [S, 3, 3], and the
    kernel is `wv_gather_coded_pages(codes, bases, page_table, weight_pages)`: it unpacks and
    decodes each gathered page, `weight_pages[i] = C @ B` in float32 with C the page's codes as
    a (P/3) x 3 matrix, so the task functions still take plain float32 weights.

    Parameters
    ----------
    page_size : int
        Weights per page (P).
    coded : CodeFormat | None
        Gather and decode SmartDeal pages stored in this format instead of float32 ones.
    table_dtype : str
        The page tables' dtype (`PagePlan.page_table_dtype`: uint16 where the ids fit).

    .. code-block:: python

        @T.prim_func
        def wv_gather_pages(pool: T.Buffer((S, 100), "float32"),
                            page_table: T.Buffer((n,), "uint16"),
                            weight_pages: T.Buffer((n, 100), "float32")):
            for i, j in T.grid(n, 100):
                weight_pages[i, j] = pool[T.Cast("int64", page_table[i]), j]
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if self.coded is not None:
            func = coded_gather_func(self.page_size, self.coded, self.table_dtype)
            return add_gather(mod, CODED_GATHER_FUNC, func)
        func = gather_func(self.page_size, self.table_dtype, with_exclusive=False)
        return add_gather(mod, GATHER_FUNC, func)


def gather_func(
    page_size: int, table_dtype: str, with_exclusive: bool, static_pages: int | None = None
) -> tirx.PrimFunc:
    """`weight_pages[i, j] = pool[page_table[i], j]`, for any pool size and table length
    (`page_table` of `table_dtype`); with `with_exclusive`, table entries >= S (the pool's page
    count) read `exclusive[entry - S, j]`. `static_pages` fixes every page count instead: the
    static copy that MetaSchedule can tune."""

    def page_count(name: str):
        return tirx.Var(name, "int64") if static_pages is None else static_pages

    n_pool = page_count("n_pool_pages")
    n_pages = page_count("n_pages")
    pool = te.placeholder((n_pool, page_size), "float32", "pool")
    page_table = te.placeholder((n_pages,), table_dtype, "page_table")
    inputs = [pool]
    if with_exclusive:
        n_exclusive = page_count("n_exclusive_pages")
        exclusive = te.placeholder((n_exclusive, page_size), "float32", "exclusive")
        inputs.append(exclusive)

    def read(i, j):
        page = page_table[i].astype("int64")
        if not with_exclusive:
            return pool[page, j]
        return tirx.if_then_else(page < n_pool, pool[page, j], exclusive[page - n_pool, j])

    pages = te.compute((n_pages, page_size), read, name=GATHER_OUTPUT)
    return te.create_prim_func([*inputs, page_table, pages])


def coded_gather_func(
    page_size: int, code_format: CodeFormat, table_dtype: str, with_exclusive: bool = False
) -> tirx.PrimFunc:
    """`weight_pages[i, 3 r + j] = sum_k c(t, 3 r + k) * bases[t, k, j]`, t = page_table[i],
    where c(t, q) decodes the q-th `width`-bit symbol s of packed row t (word q // n, bits
    (q % n) * width .., n = 32 // width codes a word): c = 0 for s = 0, else
    +-2^(min_exponent + (s - 1) // 2), negative when s - 1 is odd (`CodeFormat`). With
    `with_exclusive`, table entries t >= S (the pool's page count) read row t - S of
    `exclusive_codes` and `exclusive_bases` (coded in the same format) instead."""
    width, per_word = code_format.width, code_format.per_word
    row_words = code_format.row_words(page_size)
    n_pool = tirx.Var("n_pool_pages", "int64")
    n_pages = tirx.Var("n_pages", "int64")
    codes = te.placeholder((n_pool, row_words), "uint32", "codes")
    bases = te.placeholder((n_pool, 3, 3), BASIS_DTYPE.name, "bases")
    page_table = te.placeholder((n_pages,), table_dtype, "page_table")
    inputs = [codes, bases]
    if with_exclusive:
        n_exclusive = tirx.Var("n_exclusive_pages", "int64")
        exclusive_codes = te.placeholder((n_exclusive, row_words), "uint32", "exclusive_codes")
        exclusive_bases = te.placeholder((n_exclusive, 3, 3), BASIS_DTYPE.name, "exclusive_bases")
        inputs += [exclusive_codes, exclusive_bases]

    def word(page, w):
        if not with_exclusive:
            return codes[page, w]
        return tirx.if_then_else(page < n_pool, codes[page, w], exclusive_codes[page - n_pool, w])

    def basis(page, k, j):  # float16 widened to float32: exact
        if not with_exclusive:
            return bases[page, k, j].astype("float32")
        return tirx.if_then_else(
            page < n_pool, bases[page, k, j], exclusive_bases[page - n_pool, k, j]
        ).astype("float32")

    def coefficient(page, position):
        shift = (position % per_word * width).astype("uint32")
        symbol = ((word(page, position // per_word) >> shift) & ((1 << width) - 1)).astype("int32")
        exponent = code_format.min_exponent + (symbol - 1) // 2
        magnitude = tirx.ldexp(tirx.const(1.0, "float32"), exponent)
        signed = tirx.if_then_else((symbol - 1) % 2 == 1, -magnitude, magnitude)
        return tirx.if_then_else(symbol == 0, tirx.const(0.0, "float32"), signed)

    k = te.reduce_axis((0, 3), "k")

    def read(i, j):
        page = page_table[i].astype("int64")
        row = j // 3
        return te.sum(coefficient(page, 3 * row + k) * basis(page, k, j % 3), axis=k)

    pages = te.compute((n_pages, page_size), read, name=GATHER_OUTPUT)
    return te.create_prim_func([*inputs, page_table, pages])


def add_gather(mod: tvm.IRModule, name: str, func: tirx.PrimFunc) -> tvm.IRModule:
    if name in [gv.name_hint for gv in mod.get_global_vars()]:
        raise ValueError(f"module already has a function '{name}'")
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out[name] = func.with_attr("global_symbol", name)
    return out
