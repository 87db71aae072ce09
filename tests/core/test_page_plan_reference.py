"""`PagePlan.pages` / `PagePlan.read` are the one reference of what a task's weights are: every
backend that gathers pages (the Relax gather of fused mode, the TIR gathers of materialize
mode for float, exclusive and SmartDeal pages, the runtime's weight views, the generated C of a
Cortex-M project built for the host) gives those exact bits. The tasks here return their weights (each times an input of ones, which is exact), so a
backend's output is what it gathered."""

import numpy as np
import pytest
import torch
from tvm import relax
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import task_weights
from tvm_weightvirt.coded_pages import CodedPages
from tvm_weightvirt.targets import mcu

# Spans that start mid-page, cross pages and end mid-page, at page sizes 100 and 96.
SHAPES = {"a": [(3, 70), (130,), (5,)], "b": [(2, 2, 40), (77,)]}


def _echo_task(name: str, shapes: list[tuple[int, ...]]) -> wv.Task:
    """`main(x_0.., w_0..) = (x_0 * w_0, ...)`: with ones as inputs, the outputs are the weights."""
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


def _shared(tasks, page_size: int) -> wv.PagePlan:
    """Task b's first page is task a's second: a plan with one shared page."""
    lossless = wv.PagePlan.lossless(tasks, page_size)
    tables = {n: t.page_table.copy() for n, t in lossless.tasks.items()}
    tables["b"][0] = tables["a"][1]
    tasks_pages = {n: wv.TaskPages(t.layout, tables[n]) for n, t in lossless.tasks.items()}
    return wv.PagePlan(page_size, lossless.pool, tasks_pages)


def _with_exclusive(tasks, page_size: int) -> wv.PagePlan:
    """Task a's last two pages and task b's first are exclusive (level 2), the rest shared."""
    shared = _shared(tasks, page_size)
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


def _coded(tasks, page_size: int) -> wv.PagePlan:
    """Every pool page as random power-of-two codes (zeros included) times a random basis."""
    shared = _shared(tasks, page_size)
    rng = np.random.default_rng(3)
    n = shared.n_pool_pages
    exponents = rng.integers(-8, 6, size=(n, page_size))
    signs = rng.choice([-1, 0, 1], size=(n, page_size), p=[0.45, 0.1, 0.45])
    codes = (signs * (exponents + 64)).astype(np.int8)
    bases = rng.normal(size=(n, 3, 3)).astype(np.float32)
    return wv.PagePlan.from_coded(page_size, CodedPages(codes, bases), shared.tasks)


BACKENDS = {
    "relax gather (fused)": ("fused", 100, _shared),
    "tir gather (materialize)": ("materialize", 100, _shared),
    "tir gather, exclusive pages": ("materialize", 100, _with_exclusive),
    "tir gather, smartdeal pages": ("materialize", 96, _coded),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_gathers_the_plans_pages_bit_for_bit(backend):
    mode, page_size, make_plan = BACKENDS[backend]
    tasks = [_echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size)
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, mode)))
    for name in ["a", "b", "a"]:
        ones = [np.ones(s, np.float32) for s in SHAPES[name]]
        expected = plan.read(name)
        for out, (weight, value) in zip(runtime.run(name, *ones), expected.items()):
            np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")
        if mode == "materialize":  # the runtime's views are the plan's pages, in order
            n = plan.task(name).layout.n_pages * page_size
            np.testing.assert_array_equal(runtime.weight_buffer[:n], plan.pages(name).reshape(-1))


@pytest.mark.parametrize("make_plan", [_shared, _coded], ids=["float pages", "smartdeal"])
def test_retraining_reads_the_plans_weights_bit_for_bit(make_plan):
    """The torch gather that joint retraining trains through (`optimize.task_weights`), on the
    pool as the plan stores it."""
    page_size = 96 if make_plan is _coded else 100
    tasks = [_echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size)
    pool = torch.from_numpy(plan.pool)
    for name in SHAPES:
        table = torch.from_numpy(plan.task(name).page_table.astype(np.int64))
        read = task_weights(pool, plan.task(name).layout, table)
        for weight, value in plan.read(name).items():
            np.testing.assert_array_equal(read[weight].numpy(), value, err_msg=f"{name}, {weight}")


@pytest.mark.skipif(bool(mcu.missing_tools(host=True)), reason="no host gcc/make")
@pytest.mark.parametrize("make_plan", [_with_exclusive, _coded], ids=["exclusive", "smartdeal"])
def test_the_generated_c_gathers_the_plans_pages_bit_for_bit(make_plan, tmp_path):
    """The C runtime's switch (pool in RAM, exclusive pages in flash, or a coded pool decoded)
    built by the host's gcc: the tasks return the plan's weights exactly."""
    page_size = 96 if make_plan is _coded else 100
    tasks = [_echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size)
    mcu.generate_project(tasks, plan, str(tmp_path), check_fit=False)
    sequence = ["a", "b", "a"]
    mcu.write_requests(
        str(tmp_path), [(n, [np.ones(s, np.float32) for s in SHAPES[n]]) for n in sequence]
    )
    run = mcu.run_project(str(tmp_path), host=True)
    for name, outputs in zip(sequence, run.outputs):
        for out, (weight, value) in zip(outputs, plan.read(name).items()):
            np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")
