"""Add the kernel that gathers a task's pages from the pool into a contiguous weight buffer."""

from __future__ import annotations

import tvm
from tvm import te, tirx

GATHER_FUNC = "wv_gather_pages"



@tvm.transform.module_pass(opt_level=0, name="AddPageGather")
class AddPageGather:
    """Add one PrimFunc `wv_gather_pages(pool, page_table, weight_pages)`:
    `weight_pages[i, j] = pool[page_table[i], j]` for any pool size S and table length n.

    Materialize mode runs it once per context switch, into one reusable buffer sized for the
    largest task; the task's weights are views of that buffer (the layout aligns each weight to
    64 bytes), so a switch costs one kernel moving the task's bytes once, and
    `task_<name>(inputs..., weights...)` runs exactly as the plain model does. Relax functions
    are left unchanged.

    Parameters
    ----------
    page_size : int
        Weights per page (P).

    .. code-block:: python

        @T.prim_func
        def wv_gather_pages(pool: T.Buffer((S, 100), "float32"),
                            page_table: T.Buffer((n,), "int32"),
                            weight_pages: T.Buffer((n, 100), "float32")):
            for i, j in T.grid(n, 100):
                weight_pages[i, j] = pool[T.Cast("int64", page_table[i]), j]
    """

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if GATHER_FUNC in [gv.name_hint for gv in mod.get_global_vars()]:
            raise ValueError(f"module already has a function '{GATHER_FUNC}'")
        n_pool, n_pages = tirx.Var("n_pool_pages", "int64"), tirx.Var("n_pages", "int64")
        pool = te.placeholder((n_pool, self.page_size), "float32", "pool")
        page_table = te.placeholder((n_pages,), "int32", "page_table")
        pages = te.compute(
            (n_pages, self.page_size),
            lambda i, j: pool[page_table[i].astype("int64"), j],
            name="weight_pages",
        )
        func = te.create_prim_func([pool, page_table, pages]).with_attr("global_symbol", GATHER_FUNC)
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        out[GATHER_FUNC] = func
        return out
