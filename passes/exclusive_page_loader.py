"""Add the gather that reads exclusive pages from a level-2 scratch input beside the pool."""

from __future__ import annotations

import tvm

from tvm_weightvirt.abi import CODED_EXCLUSIVE_GATHER_FUNC, EXCLUSIVE_GATHER_FUNC

from .add_page_gather import GatherOptions, add_gather, coded_gather_func, gather_func


@tvm.transform.module_pass(opt_level=0, name="ExclusivePageLoader")
class ExclusivePageLoader(GatherOptions):
    """Add `wv_gather_pages_exclusive(pool, exclusive, page_table, weight_pages)`: a page-table
    entry `v < S` (the pool's page count) reads pool page `v`, an entry `v >= S` reads page
    `v - S` of `exclusive`, the task's exclusive pages that the runtime's page store has loaded
    from level-2 storage (flash, eMMC, a file) into a level-1 scratch. The compiled program is
    the same whatever the level-2 storage is. Relax functions are left unchanged.

    Note: materialize mode (after `AddPageGather`), whose switch runs this gather once.

    With `coded` (SmartDeal pages: pool and exclusive pages coded in one format), the gather is
    `wv_gather_coded_pages_exclusive(codes, bases, exclusive_codes, exclusive_bases,
    page_table, weight_pages)`, which decodes each page as `wv_gather_coded_pages` does: level 2
    holds the exclusive pages coded, and a switch reads their codes and bases.

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
        def wv_gather_pages_exclusive(pool: T.Buffer((S, 100), "float32"),
                                      exclusive: T.Buffer((E, 100), "float32"),
                                      page_table: T.Buffer((n,), "uint16"),
                                      weight_pages: T.Buffer((n, 100), "float32")):
            for i, j in T.grid(n, 100):
                weight_pages[i, j] = T.if_then_else(
                    page_table[i] < S, pool[page_table[i], j], exclusive[page_table[i] - S, j])
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if self.coded is not None:
            func = coded_gather_func(
                self.page_size, self.coded, self.table_dtype, with_exclusive=True
            )
            return add_gather(mod, CODED_EXCLUSIVE_GATHER_FUNC, func)
        func = gather_func(self.page_size, self.table_dtype, with_exclusive=True)
        return add_gather(mod, EXCLUSIVE_GATHER_FUNC, func)
