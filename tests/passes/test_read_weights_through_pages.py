"""ReadWeightsThroughPages' paged weight reads: each row read from its page, no row across a page;
how often a kernel reads each weight element."""

import math

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import tirx as T
from tvm_weightvirt.passes import (
    ReadWeightsThroughPages,
)
from tvm_weightvirt.passes.read_weights_through_pages import reads_per_element, row_split


@I.ir_module
class PagedBefore:
    @T.prim_func(s_tir=True)
    def dense(
        x: T.Buffer((1, 144), "float32"),
        w: T.Buffer((10, 144), "float32"),
        y: T.Buffer((1, 10), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, k in T.grid(10, 144):
            with T.sblock("y"):
                vi, vk = T.axis.remap("SR", [i, k])
                with T.init():
                    y[0, vi] = T.float32(0)
                y[0, vi] = y[0, vi] + x[0, vk] * w[vi, vk]

    @T.prim_func(s_tir=True)
    def scale(
        x: T.Buffer((2, 5), "float32"),
        s: T.Buffer((2, 5), "float32"),
        y: T.Buffer((2, 5), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(2, 5):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] * s[vi, vj]


@I.ir_module
class PagedExpected:
    @T.prim_func(s_tir=True)
    def dense_paged_1(
        x: T.Buffer((1, 144), "float32"),
        w_pages: T.Buffer((2880,), "float32"),
        w_table: T.Buffer((5,), "uint16"),
        y: T.Buffer((1, 10), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, k in T.grid(10, 144):
            with T.sblock("y"):
                vi, vk = T.axis.remap("SR", [i, k])
                T.reads(x[0, vk], w_pages[0:2880], w_table[0:5])
                T.writes(y[0, vi])
                with T.init():
                    y[0, vi] = T.float32(0)
                # rows of 144 divide P = 288: row vi is on page vi // 2, at (vi % 2) * 144
                page = T.meta_var(
                    T.Cast("int32", w_table[T.Cast("int32", T.Cast("int64", vi) // T.int64(2))])
                )
                offset = T.meta_var(
                    T.Cast(
                        "int32",
                        T.Cast("int64", vi) % T.int64(2) * T.int64(144) + T.Cast("int64", vk),
                    )
                )
                y[0, vi] = y[0, vi] + x[0, vk] * w_pages[page * 288 + offset]

    @T.prim_func(s_tir=True)
    def scale(
        x: T.Buffer((2, 5), "float32"),
        s: T.Buffer((2, 5), "float32"),
        y: T.Buffer((2, 5), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(2, 5):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] * s[vi, vj]

    @T.prim_func(s_tir=True)
    def scale_paged_1(
        x: T.Buffer((2, 5), "float32"),
        s_pages: T.Buffer((2880,), "float32"),
        s_table: T.Buffer((1,), "uint16"),
        y: T.Buffer((2, 5), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(2, 5):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.reads(x[vi, vj], s_pages[0:2880], s_table[0:1])
                T.writes(y[vi, vj])
                # no trailing block of (2, 5) divides 288: the page is found per element
                flat = T.meta_var(T.Cast("int64", vi) * T.int64(5) + T.Cast("int64", vj))
                page = T.meta_var(T.Cast("int32", s_table[T.Cast("int32", flat // T.int64(288))]))
                offset = T.meta_var(T.Cast("int32", flat % T.int64(288)))
                y[vi, vj] = x[vi, vj] * s_pages[page * 288 + offset]


def test_read_weights_through_pages_reads_each_row_from_its_page():
    """A weight parameter becomes (page storage, its page table); `W[i, k]` becomes
    `pages[table[page] * P + offset]`, the page found from the leading axes only. A kernel
    also called without weights (`()` among its uses) is kept beside its paged variant."""
    after = ReadWeightsThroughPages(288, 2880, {"dense": [(1,)], "scale": [(1,), ()]})(PagedBefore)
    tvm.ir.assert_structural_equal(after, PagedExpected)


@pytest.mark.parametrize("page_size", [64, 96, 100, 128, 288])
@pytest.mark.parametrize(
    "shape", [(16, 1, 3, 3), (32, 16, 5), (10, 256), (128, 13), (3, 70), (130,), (7,)]
)
def test_paged_reads_find_every_weight_on_its_page_and_no_row_crosses_a_page(shape, page_size):
    """The pass's (page, offset) of every element of a page-aligned weight is (flat // P,
    flat % P), page ids stay within the weight's pages, and a row of the split (the elements
    that share the leading indices) lies on one page, contiguously."""
    split = row_split(shape, page_size)
    row = math.prod(shape[split:])
    rows_per_page = page_size // row
    assert page_size % row == 0
    index = np.indices(shape).reshape(len(shape), -1)
    outer = np.ravel_multi_index(index[:split], shape[:split]) if split else np.zeros(1, int)
    inner = np.ravel_multi_index(index[split:], shape[split:]) if split < len(shape) else 0
    page = outer // rows_per_page
    offset = outer % rows_per_page * row + inner
    flat = np.arange(math.prod(shape))
    np.testing.assert_array_equal(page * page_size + offset, flat)
    assert page.max() < -(-math.prod(shape) // page_size)
    starts = offset.reshape(-1, row)[:, 0] if row > 1 else offset
    assert (starts + row <= page_size).all()


@T.prim_func(s_tir=True)
def _broadcast_scale(
    x: T.Buffer((4, 5), "float32"), s: T.Buffer((5,), "float32"), y: T.Buffer((4, 5), "float32")
):
    T.func_attr({"tirx.noalias": True})
    for i, j in T.grid(4, 5):
        with T.sblock("y"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = x[vi, vj] * s[vj]


def test_reads_per_element_counts_how_often_a_kernel_reads_each_weight_element():
    """A dense layer reads each weight element once; a broadcast (like a convolution's weight
    over output positions) reads each as often as it is broadcast."""
    assert reads_per_element(PagedBefore["dense"], 1) == 1.0
    assert reads_per_element(_broadcast_scale, 1) == 4.0
    assert reads_per_element(_broadcast_scale, 0) == 1.0
