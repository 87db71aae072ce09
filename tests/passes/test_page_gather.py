"""AddPageGather's (plain and coded) and ExclusivePageLoader's gather kernels; Relax functions
unchanged."""

import pytest
import tvm
from ir_helpers import without
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T
from tvm_weightvirt.passes import (
    AddPageGather,
    ExclusivePageLoader,
)

from tvm_weightvirt.coded_pages import CodeFormat

# te.create_prim_func gives the dynamic page axis an int32 0 as its start (its extent is the
# int64 page count): the Expected kernels spell that out as (T.int32(0), n_pages).


@I.ir_module
class GatherBefore:
    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


@I.ir_module
class GatherExpected:
    @T.prim_func(s_tir=True)
    def wv_gather_pages(pool_h: T.handle, page_table_h: T.handle, weight_pages_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        n_pool_pages, n_pages = T.int64(), T.int64()
        pool = T.match_buffer(pool_h, (n_pool_pages, 100), "float32")
        page_table = T.match_buffer(page_table_h, (n_pages,), "uint16")
        weight_pages = T.match_buffer(weight_pages_h, (n_pages, 100), "float32")
        for i, j in T.grid(n_pages, 100):
            with T.sblock("weight_pages"):
                vi = T.axis.spatial((T.int32(0), n_pages), i)
                vj = T.axis.spatial(100, j)
                weight_pages[vi, vj] = pool[T.Cast("int64", page_table[vi]), vj]

    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


@I.ir_module
class CodedGatherExpected:
    @T.prim_func(s_tir=True)
    def wv_gather_coded_pages(
        codes_h: T.handle, bases_h: T.handle, page_table_h: T.handle, weight_pages_h: T.handle
    ):
        T.func_attr({"tirx.noalias": True})
        n_pool_pages, n_pages = T.int64(), T.int64()
        # 6 codes of 5 bits, 6 to a 32-bit word: rows of 1 word
        codes = T.match_buffer(codes_h, (n_pool_pages, 1), "uint32")
        bases = T.match_buffer(bases_h, (n_pool_pages, 3, 3), "float16")
        page_table = T.match_buffer(page_table_h, (n_pages,), "uint16")
        weight_pages = T.match_buffer(weight_pages_h, (n_pages, 6), "float32")
        for i, j, k in T.grid(n_pages, 6, 3):
            with T.sblock("weight_pages"):
                vi = T.axis.spatial((T.int32(0), n_pages), i)
                vj, vk = T.axis.remap("SR", [j, k])
                # page t, code q = 3 (vj // 3) + vk: bits 5 (q % 6) .. of word q // 6
                t = T.meta_var(T.Cast("int64", page_table[vi]))
                q = T.meta_var(vj // 3 * 3 + vk)
                word = T.meta_var(codes[t, q // 6])
                symbol = T.meta_var(
                    T.Cast("int32", word >> T.Cast("uint32", q % 6 * 5) & T.uint32(31))
                )
                # symbol 0: zero; else +-2^(-8 + (symbol - 1) // 2), negative for odd symbol - 1;
                # the float16 basis widened to float32
                magnitude = T.meta_var(T.ldexp(T.float32(1), (symbol - 1) // 2 - 8))
                c = T.meta_var(
                    T.if_then_else(
                        symbol == 0,
                        T.float32(0),
                        T.if_then_else((symbol + 1) % 2 == 1, magnitude * T.float32(-1), magnitude),
                    )
                )
                with T.init():
                    weight_pages[vi, vj] = T.float32(0)
                weight_pages[vi, vj] = weight_pages[vi, vj] + c * T.Cast(
                    "float32", bases[t, vk, vj % 3]
                )

    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


@I.ir_module
class ExclusiveGatherExpected:
    @T.prim_func(s_tir=True)
    def wv_gather_pages_exclusive(
        pool_h: T.handle, exclusive_h: T.handle, page_table_h: T.handle, weight_pages_h: T.handle
    ):
        T.func_attr({"tirx.noalias": True})
        n_pool_pages, n_exclusive_pages, n_pages = T.int64(), T.int64(), T.int64()
        pool = T.match_buffer(pool_h, (n_pool_pages, 100), "float32")
        exclusive = T.match_buffer(exclusive_h, (n_exclusive_pages, 100), "float32")
        page_table = T.match_buffer(page_table_h, (n_pages,), "uint16")
        weight_pages = T.match_buffer(weight_pages_h, (n_pages, 100), "float32")
        for i, j in T.grid(n_pages, 100):
            with T.sblock("weight_pages"):
                vi = T.axis.spatial((T.int32(0), n_pages), i)
                vj = T.axis.spatial(100, j)
                v = T.meta_var(T.Cast("int64", page_table[vi]))
                weight_pages[vi, vj] = T.if_then_else(
                    v < n_pool_pages, pool[v, vj], exclusive[v - n_pool_pages, vj]
                )

    @R.function
    def task_a(x: R.Tensor((2, 4), "float32"), b: R.Tensor((4,), "float32")) -> R.Tensor(
        (2, 4), "float32"
    ):
        R.func_attr({"num_input": 1})
        y = R.add(x, b)
        return y


def test_add_page_gather_adds_the_gather_kernel():
    """Adds one PrimFunc `wv_gather_pages(pool, page_table, weight_pages)` with
    `weight_pages[i, j] = pool[page_table[i], j]`, for any pool size and table length."""
    after = AddPageGather(100)(GatherBefore)
    tvm.ir.assert_structural_equal(after, GatherExpected)


def test_add_page_gather_coded_adds_the_decoding_gather_kernel():
    """With `coded`, adds `wv_gather_coded_pages(codes, bases, page_table, weight_pages)`:
    each gathered page is C @ B, C its power-of-two codes decoded as a (P/3) x 3 matrix and B
    its 3x3 bases."""
    after = AddPageGather(6, coded=CodeFormat(width=5, min_exponent=-8))(GatherBefore)
    tvm.ir.assert_structural_equal(after, CodedGatherExpected)


def test_add_page_gather_coded_refuses_pages_that_are_not_rows_of_3():
    """A coded page is (P/3) x 3 coefficients: P must be a multiple of 3."""
    with pytest.raises(ValueError, match="multiple of 3, got 100"):
        AddPageGather(100, coded=CodeFormat(width=5, min_exponent=-8))


@pytest.mark.parametrize("coded", [False, True])
def test_add_page_gather_leaves_relax_functions_unchanged(coded):
    """The pass only adds its kernel: every function already in the module is kept as is."""
    after = AddPageGather(6, coded=CodeFormat(5, -8) if coded else None)(GatherBefore)
    name = "wv_gather_coded_pages" if coded else "wv_gather_pages"
    tvm.ir.assert_structural_equal(without(after, name), GatherBefore)


def test_exclusive_page_loader_adds_the_exclusive_gather_kernel():
    """Adds `wv_gather_pages_exclusive(pool, exclusive, page_table, weight_pages)`: a table
    entry v < S (the pool's page count) reads pool page v, an entry v >= S reads exclusive
    page v - S."""
    after = ExclusivePageLoader(100)(GatherBefore)
    tvm.ir.assert_structural_equal(after, ExclusiveGatherExpected)


def test_exclusive_page_loader_leaves_relax_functions_unchanged():
    """The pass only adds its kernel, beside any gather already there: every function already
    in the module is kept as is."""
    with_gather = AddPageGather(100)(GatherBefore)
    after = ExclusivePageLoader(100)(with_gather)
    tvm.ir.assert_structural_equal(without(after, "wv_gather_pages_exclusive"), with_gather)
