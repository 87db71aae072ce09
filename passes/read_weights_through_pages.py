"""Make kernels read their weights from the pool's pages in place, through a page table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad

PAGE_TABLE_DTYPE = "uint16"  # as the MCU's page tables


def paged_name(kernel: str, positions: Iterable[int]) -> str:
    """The name of `kernel`'s variant that reads its parameters at `positions` through pages."""
    return f"{kernel}_paged_" + "_".join(map(str, positions))


def reads_per_element(func: tirx.PrimFunc, position: int) -> float:
    """How many times `func` reads each element of its parameter at `position`: the largest
    iteration domain of a block that reads it, over the parameter's size (1 for a dense layer
    at batch 1, the output positions for a convolution's weight)."""
    param = func.params[position]
    most = 0

    def visit(block):
        nonlocal most
        if any(region.source.same_as(param) for region in block.reads):
            most = max(most, math.prod(int(v.dom.extent) for v in block.iter_vars))
        return block

    tvm_ffi.structural_map(func.body, [(s_tir.SBlock, visit)])
    return most / math.prod(int(d) for d in param.ty.shape)


def row_split(shape: tuple[int, ...], page_size: int) -> int:
    """The first axis of the longest trailing block of `shape` whose size divides the page size:
    rows of that block never cross a page, so a kernel finds a row's page once."""
    return next(a for a in range(len(shape) + 1) if page_size % math.prod(shape[a:]) == 0)


@tvm.transform.module_pass(opt_level=0, name="ReadWeightsThroughPages")
class ReadWeightsThroughPages:
    """Give each listed kernel a variant in which a weight parameter `W` becomes two, the page
    storage `pages` (every page, back to back) and `W`'s page table `table` (the ids of its
    pages, in order), and every `W[i...]` becomes `pages[table[page] * P + offset]`.

    The weight must start on a page boundary (a page-aligned layout). The index is split at the
    longest trailing block of axes whose size `R` divides `P` (`row_split`): with `o` the
    row-major index of the leading axes and `j` that of the trailing ones, `page = o // (P / R)`
    and `offset = (o % (P / R)) * R + j`. The page depends on the outer loops only, so the
    inner loop reads `pages` contiguously from an address found once per row; when no block
    divides `P` (`R = 1`) the page is found per element. The result is exact either way.

    Note: for the static C executors (`targets.mcu`), whose switch then only picks the task.

    Parameters
    ----------
    page_size : int
        Weights per page (P).
    n_page_elems : int
        Length of the page storage (pages x P).
    uses : Mapping[str, Iterable[tuple[int, ...]]]
        Kernel name -> the parameter positions that are weights, one tuple per way the kernel
        is called. Each non-empty tuple adds the variant `paged_name(kernel, positions)`; the
        kernel itself is kept only if `()` is among its uses. Other functions are unchanged.

    .. code-block:: python

        # W: (10, 144) float32, P = 288: rows of 144, two per page
        pages[T.Cast("int32", table[i // 2]) * 288 + T.Cast("int32", i % 2 * 144 + k)]
    """

    def __init__(
        self, page_size: int, n_page_elems: int, uses: Mapping[str, Iterable[tuple[int, ...]]]
    ) -> None:
        self.page_size = page_size
        self.n_page_elems = n_page_elems
        self.uses = {k: sorted(set(map(tuple, v))) for k, v in uses.items()}

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        functions = {}
        for gv, func in mod.functions_items():
            uses = self.uses.get(gv.name_hint)
            if uses is None:
                functions[gv] = func
                continue
            if not isinstance(func, tirx.PrimFunc):
                raise ValueError(f"'{gv.name_hint}' is not a kernel (a TIR PrimFunc)")
            for positions in uses:
                if not positions:
                    functions[gv] = func
                    continue
                name = paged_name(gv.name_hint, positions)
                paged = self._paged(func, gv.name_hint, positions)
                if "global_symbol" in func.attrs:
                    paged = paged.with_attr("global_symbol", name)
                functions[tvm.ir.GlobalVar(name)] = paged
        missing = sorted(set(self.uses) - {gv.name_hint for gv in mod.get_global_vars()})
        if missing:
            raise ValueError(f"no kernels {missing} in the module")
        return tvm.IRModule(functions, attrs=mod.attrs)

    def _paged(self, func: tirx.PrimFunc, kernel: str, positions: tuple[int, ...]):
        page_size = self.page_size
        params, paged = [], []  # paged: (W, pages, table, shape, split)
        for i, param in enumerate(func.params):
            if i not in positions:
                params.append(param)
                continue
            if str(param.ty.dtype) != "float32":
                raise ValueError(
                    f"kernel '{kernel}': parameter {i} ('{param.name}') is "
                    f"{param.ty.dtype}; pages hold float32"
                )
            shape = tuple(int(d) for d in param.ty.shape)
            n_pages = -(-math.prod(shape) // page_size)
            pages = tirx.decl_buffer(
                (self.n_page_elems,), "float32", f"{param.name}_pages", layout=None
            )
            table = tirx.decl_buffer(
                (n_pages,), PAGE_TABLE_DTYPE, f"{param.name}_table", layout=None
            )
            params += [pages, table]
            paged.append((param, pages, table, shape, row_split(shape, page_size)))
        if len(paged) != len(positions) or max(positions) >= len(func.params):
            raise ValueError(f"kernel '{kernel}' has no parameters {positions}")

        def find(source):
            return next((p for p in paged if p[0].same_as(source)), None)

        def read(load):
            hit = find(load.source)
            if hit is None:
                return load
            _, pages, table, shape, split = hit
            row = math.prod(shape[split:])
            rows_per_page = page_size // row
            outer = _row_major(load.indices[:split], shape[:split])
            inner = _row_major(load.indices[split:], shape[split:])
            page = tirx.BufferLoad(table, [tirx.Cast("int32", tirx.floordiv(outer, rows_per_page))])
            offset = tirx.Cast("int32", tirx.floormod(outer, rows_per_page) * row + inner)
            return tirx.BufferLoad(pages, [tirx.Cast("int32", page) * page_size + offset])

        def regions(block):
            reads = []
            for region in block.reads:
                hit = find(region.source)
                reads += [_whole(hit[1]), _whole(hit[2])] if hit else [region]
            return s_tir.SBlock(
                block.iter_vars,
                reads,
                block.writes,
                block.name_hint,
                block.body,
                block.init,
                block.alloc_buffers,
                block.match_buffers,
                block.annotations,
            )

        body = tvm_ffi.structural_map(func.body, [(TensorLoad, read), (s_tir.SBlock, regions)])
        # fresh variables: the kernel and its variants may sit in one module
        return s_tir.renew_defs(tirx.PrimFunc(params, body, func.ret_type, func.attrs))


def _row_major(indices, dims):
    flat = tirx.const(0, "int64")
    for index, dim in zip(indices, dims):
        flat = flat * dim + (index if str(index.ty.dtype) == "int64" else tirx.Cast("int64", index))
    return flat


def _whole(buffer):
    return tirx.BufferRegion(buffer, [tvm.ir.Range.from_min_extent(0, d) for d in buffer.ty.shape])
