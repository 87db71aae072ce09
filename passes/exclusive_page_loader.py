"""Add the gather that reads exclusive pages from a level-2 scratch input beside the pool."""

from __future__ import annotations

import tvm

from tvm_weightvirt.abi import EXCLUSIVE_GATHER_FUNC

from .add_page_gather import add_gather, gather_func


@tvm.transform.module_pass(opt_level=0, name="ExclusivePageLoader")
class ExclusivePageLoader:
    """Add `wv_gather_pages_exclusive(pool, exclusive, page_table, weight_pages)`: a page-table
    entry `v < S` (the pool's page count) reads pool page `v`, an entry `v >= S` reads page
    `v - S` of `exclusive`, the task's exclusive pages that the runtime's page store has loaded
    from level-2 storage (flash, eMMC, a file) into a level-1 scratch. The compiled program is
    the same whatever the level-2 storage is. Relax functions are left unchanged.

    Note: materialize mode (after `AddPageGather`), whose switch runs this gather once.

    Parameters
    ----------
    page_size : int
        Weights per page (P).

    .. code-block:: python

        @T.prim_func
        def wv_gather_pages_exclusive(pool: T.Buffer((S, 100), "float32"),
                                      exclusive: T.Buffer((E, 100), "float32"),
                                      page_table: T.Buffer((n,), "int32"),
                                      weight_pages: T.Buffer((n, 100), "float32")):
            for i, j in T.grid(n, 100):
                weight_pages[i, j] = T.if_then_else(
                    page_table[i] < S, pool[page_table[i], j], exclusive[page_table[i] - S, j])
    """

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = gather_func(self.page_size, with_exclusive=True)
        return add_gather(mod, EXCLUSIVE_GATHER_FUNC, func)
