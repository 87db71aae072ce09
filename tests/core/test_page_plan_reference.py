"""`PagePlan.pages` / `PagePlan.read` are the one reference of what a task's weights are: every
backend that gathers pages (the Relax gather of fused mode, the TIR gathers of materialize
mode for float, exclusive and SmartDeal pages, the runtime's weight views, the generated C of a
Cortex-M project built for the host) gives those exact bits. The tasks here return their weights (each times an input of ones, which is exact), so a
backend's output is what it gathered."""

import numpy as np
import pytest
import torch
from page_plans import (
    BACKENDS,
    SHAPES,
    coded_exclusive_plan,
    coded_plan,
    echo_task,
    exclusive_plan,
    shared_plan,
)
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.algorithms.optimize import task_weights
from tvm_weightvirt.coded_pages import CodedPages, CodeFormat
from tvm_weightvirt.targets import mcu


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_gathers_the_plans_pages_bit_for_bit(backend):
    mode, page_size, make_plan = BACKENDS[backend]
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size)
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, mode)))
    for name in ["a", "b", "a"]:
        ones = [np.ones(s, np.float32) for s in SHAPES[name]]
        expected = plan.read(name)
        for out, (weight, value) in zip(runtime.run(name, *ones), expected.items()):
            np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")
        if mode == "materialize":  # the runtime's views are the plan's pages, in order
            n = plan.task(name).layout.n_pages * page_size
            np.testing.assert_array_equal(
                runtime.weight_buffer.numpy()[:n], plan.pages(name).reshape(-1)
            )


@pytest.mark.parametrize("make_plan", [shared_plan, coded_plan], ids=["float pages", "smartdeal"])
def test_retraining_reads_the_plans_weights_bit_for_bit(make_plan):
    """The torch gather that joint retraining trains through (`optimize.task_weights`), on the
    pool as the plan stores it."""
    page_size = 96 if make_plan is coded_plan else 100
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size)
    pool = torch.from_numpy(plan.pool)
    for name in SHAPES:
        table = torch.from_numpy(plan.task(name).page_table.astype(np.int64))
        read = task_weights(pool, plan.task(name).layout, table)
        for weight, value in plan.read(name).items():
            np.testing.assert_array_equal(read[weight].numpy(), value, err_msg=f"{name}, {weight}")


@pytest.mark.skipif(bool(mcu.missing_tools(host=True)), reason="no host gcc/make")
@pytest.mark.parametrize(
    "make_plan",
    [exclusive_plan, coded_plan, coded_exclusive_plan],
    ids=["exclusive", "smartdeal", "smartdeal exclusive"],
)
def test_the_generated_c_gathers_the_plans_pages_bit_for_bit(make_plan, tmp_path):
    """The C runtime's switch (pool in RAM, exclusive pages in flash; a coded pool and coded
    exclusive pages decoded) built by the host's gcc: the tasks return the plan's weights
    exactly."""
    page_size = 100 if make_plan is exclusive_plan else 96
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size)
    mcu.generate_project(tasks, plan, str(tmp_path), check_fit=False)
    _host_run_returns_the_plans_weights(str(tmp_path), plan)


@pytest.mark.skipif(bool(mcu.missing_tools(host=True)), reason="no host gcc/make")
@pytest.mark.parametrize("pool_in", ["ram", "flash"])
@pytest.mark.parametrize(
    "make_plan", [exclusive_plan, coded_exclusive_plan], ids=["float", "coded"]
)
def test_zero_copy_kernels_read_the_plans_pages_in_place_bit_for_bit(make_plan, pool_in, tmp_path):
    """Zero-copy C (kernels read each weight through its page table, or, SmartDeal pages, get
    it decoded into a scratch before each call; shared, pool and exclusive pages in one array,
    in RAM or flash) built by the host's gcc: the tasks return the plan's weights exactly, and
    the switch gathers nothing."""
    page_size = 100 if make_plan is exclusive_plan else 96
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = make_plan(tasks, page_size, page_aligned=True)
    manifest = mcu.generate_project(
        tasks, plan, str(tmp_path), check_fit=False, zero_copy=True, pool_in=pool_in
    )
    n_pages = plan.n_pool_pages + 3  # a's two exclusive pages and b's one
    page_bytes = 4 * page_size if plan.coded is None else plan.coded.format.page_bytes(page_size)
    assert manifest["data_bytes"]["ram"].get("pages", 0) == (
        n_pages * page_bytes if pool_in == "ram" else 0
    )
    assert "weight_buffer" not in manifest["data_bytes"]["ram"]
    _host_run_returns_the_plans_weights(str(tmp_path), plan)


def test_zero_copy_needs_a_page_aligned_plan(tmp_path):
    """Kernels shared by tasks read a weight from the start of its first page: a plan whose
    weights start mid-page is refused, naming the task, the weight and the fix."""
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = exclusive_plan(tasks, 100)
    with pytest.raises(ValueError, match="task 'a': weight 'w1'.*--page-aligned"):
        mcu.generate_project(tasks, plan, str(tmp_path), check_fit=False, zero_copy=True)


def _host_run_returns_the_plans_weights(folder: str, plan) -> None:
    """Run a, b, a with inputs of ones on the host build of the echo tasks' project: each
    output must be the plan's weight, bit for bit."""
    sequence = ["a", "b", "a"]
    mcu.write_requests(folder, [(n, [np.ones(s, np.float32) for s in SHAPES[n]]) for n in sequence])
    run = mcu.run_project(folder, host=True)
    for name, outputs in zip(sequence, run.outputs):
        for out, (weight, value) in zip(outputs, plan.read(name).items()):
            np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")


def test_coded_exclusive_pages_round_trip_and_run_from_the_level2_file(tmp_path):
    """SmartDeal exclusive pages are stored coded (packed codes + bases, the pool's format) in
    the .wvpack, come back bit for bit, and a runtime reading them from that file as level 2
    reads exactly their stored bytes at each switch and returns the plan's weights."""
    from safetensors import safe_open

    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = coded_exclusive_plan(tasks, 96)
    path = tmp_path / "coded.wvpack"
    wv.save_wvpack(path, plan, tasks)
    with safe_open(path, framework="np") as f:
        keys = set(f.keys())
    assert {"exclusive_codes.a", "exclusive_bases.a", "exclusive_codes.b"} <= keys
    assert not any(k.startswith("exclusive.") for k in keys)  # no float32 copy
    loaded = wv.load_wvpack(path).plan
    row_bytes = plan.coded.format.row_bytes(96)
    assert loaded.exclusive_bytes == plan.exclusive_bytes == 3 * (row_bytes + 18)
    for name, t in plan.tasks.items():
        np.testing.assert_array_equal(loaded.task(name).coded.codes, t.coded.codes)
        np.testing.assert_array_equal(loaded.task(name).coded.bases, t.coded.bases)
        assert loaded.task(name).coded.format == plan.coded.format
        np.testing.assert_array_equal(loaded.pages(name), plan.pages(name))
    runtime = MultitaskRuntime(loaded, wv.build(wv.lower(tasks, loaded)), level2=str(path))
    for name in ["a", "b", "a"]:
        ones = [np.ones(s, np.float32) for s in SHAPES[name]]
        for out, value in zip(runtime.run(name, *ones), plan.read(name).values()):
            np.testing.assert_array_equal(out, value)
    assert runtime.counters.bytes_read_l2 == (2 + 1 + 2) * (row_bytes + 18)


def test_a_coded_plan_stores_every_page_coded_in_one_format():
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = coded_exclusive_plan(tasks, 96)
    a = plan.task("a")
    float_exclusive = wv.TaskPages(a.layout, a.page_table, a.exclusive_pages)
    with pytest.raises(ValueError, match="task 'a': the pool is SmartDeal pages, its exclusive"):
        wv.PagePlan.from_coded(96, plan.coded, {**plan.tasks, "a": float_exclusive})
    wider = CodeFormat(plan.coded.format.width + 1, plan.coded.format.min_exponent - 1)
    own_format = wv.TaskPages(
        a.layout, a.page_table, coded=CodedPages(a.coded.codes, a.coded.bases, wider)
    )
    with pytest.raises(ValueError, match="task 'a': exclusive pages stored as .*one format"):
        wv.PagePlan.from_coded(96, plan.coded, {**plan.tasks, "a": own_format})
    with pytest.raises(ValueError, match="task 'a': coded exclusive pages beside a float32 pool"):
        wv.PagePlan(96, plan.pool, plan.tasks)
