"""Mapped pages: each task's pages placed once in a virtual range of their own, a switch picks
the range. The ranges read the plan's pages bit for bit (shared, exclusive from level 2, with
prefetches), a switch moves no weight bytes for tasks in kernel layout, and plans or libraries
that cannot be mapped are refused with the reason."""

import numpy as np
import pytest
from page_plans import echo_task, exclusive_plan, shared_plan
from tvm_weightvirt.runtime import MultitaskRuntime
from tvm_weightvirt.runtime.page_mapping import OS_PAGE_BYTES

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples

PAGE = OS_PAGE_BYTES // 4  # weights per page: one OS page
# spans start mid-page, cross pages and end mid-page at PAGE weights a page
SHAPES = {"a": [(3, 700), (1300,), (5,)], "b": [(2, 2, 400), (1077,)]}


def _echo_plan(make_plan):
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    return tasks, make_plan(tasks, PAGE)


def _assert_reads_the_plan(runtime, plan, name):
    ones = [np.ones(s, np.float32) for s in SHAPES[name]]
    for out, (weight, value) in zip(runtime.run(name, *ones), plan.read(name).items()):
        np.testing.assert_array_equal(out, value, err_msg=f"task {name}, {weight}")


@pytest.mark.parametrize("make_plan", [shared_plan, exclusive_plan], ids=["shared", "exclusive"])
def test_mapped_ranges_read_the_plans_pages_and_switches_move_no_weight_bytes(make_plan, tmp_path):
    tasks, plan = _echo_plan(make_plan)
    path = str(tmp_path / "plan.wvpack")
    wv.save_wvpack(path, plan, tasks)
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)), level2=path, mapped=True)
    sequence = ["a", "b", "a", "b", "b"]
    for name in sequence:
        _assert_reads_the_plan(runtime, plan, name)
    counters = runtime.counters
    assert counters.switches == 4
    assert counters.bytes_gathered == 0 and counters.bytes_transformed == 0
    exclusive = {n: plan.task(n).exclusive_bytes for n in SHAPES}
    assert counters.bytes_read_l2 == sum(exclusive[n] for n in ["a", "b", "a", "b"])
    # no weight buffer: the pool, the tables and (exclusive pages) two scratch slots
    scratch = 2 * max(plan.task(n).n_exclusive_pages for n in SHAPES) * PAGE * 4
    assert runtime.resident_bytes == plan.pool_bytes + plan.page_table_bytes + scratch


def test_a_prefetch_never_writes_the_exclusive_pages_the_current_task_reads():
    """Prefetching b while a runs, then a while b runs: each lands in the scratch slot the
    current task does not read in place."""
    tasks, plan = _echo_plan(exclusive_plan)
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)), mapped=True)
    runtime.switch("a")
    for current, upcoming in [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]:
        runtime.prefetch(upcoming).result()
        _assert_reads_the_plan(runtime, plan, current)
        _assert_reads_the_plan(runtime, plan, upcoming)  # switches, consumes the prefetch
    assert runtime.counters.prefetch_hits == 4
    rng = np.random.default_rng(0)
    names = rng.choice(list(SHAPES), 30).tolist()
    ones = {n: tuple(np.ones(s, np.float32) for s in SHAPES[n]) for n in SHAPES}
    for name, outs in zip(names, runtime.run_many([(n, ones[n]) for n in names])):
        for out, value in zip(outs, plan.read(name).values()):
            np.testing.assert_array_equal(out, value)


def test_tasks_in_kernel_layout_switch_without_moving_a_weight_byte():
    """Two CNNs and an MLP: in kernel layout their mapped switch runs no weight transform and
    gives materialize mode's outputs bit for bit (the same kernels on the same weights); as
    imported, the switch still permutes every dense and convolution weight (counted)."""
    models = [("a", "cnn2d", 0), ("b", "cnn2d", 1), ("m", "mlp", 2)]
    tasks, inputs = [], {}
    for name, kind, seed in models:
        model, x = examples.torch_model(kind, seed)
        tasks.append(wv.Task.from_torch(model, (x,), name=name))
        inputs[name] = x.numpy()
    kernel_tasks = [t.in_kernel_layout() for t in tasks]
    plan = wv.PagePlan.lossless(tasks, PAGE)
    kernel_plan = wv.PagePlan.lossless(kernel_tasks, PAGE)
    reference = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)))
    mapped = MultitaskRuntime(
        kernel_plan, wv.build(wv.lower(kernel_tasks, kernel_plan)), mapped=True
    )
    imported = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)), mapped=True)
    for name in ["a", "b", "m", "a", "m"]:
        expected = reference.run(name, inputs[name])[0]
        np.testing.assert_array_equal(mapped.run(name, inputs[name])[0], expected)
        np.testing.assert_array_equal(imported.run(name, inputs[name])[0], expected)
    assert mapped.counters.bytes_gathered == mapped.counters.bytes_transformed == 0
    permuted = {t.name: sum(w.nbytes for n, w in t.weights.items() if w.ndim >= 2) for t in tasks}
    assert imported.counters.bytes_transformed == sum(
        permuted[n] for n in ["a", "b", "m", "a", "m"]
    )


def test_plans_and_libraries_that_cannot_be_mapped_are_refused():
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    small_pages = shared_plan(tasks, 100)
    with pytest.raises(ValueError, match=f"multiple of {PAGE} weights"):
        MultitaskRuntime(small_pages, wv.build(wv.lower(tasks, small_pages)), mapped=True)
    plan = shared_plan(tasks, PAGE)
    with pytest.raises(ValueError, match="fused mode"):
        MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan, "fused")), mapped=True)


def test_lowering_tasks_whose_weights_are_not_the_plans_shapes_names_the_weight():
    model, x = examples.torch_model("mlp", 0)
    task = wv.Task.from_torch(model, (x,), name="m")
    plan = wv.PagePlan.lossless([task.in_kernel_layout()], PAGE)
    with pytest.raises(ValueError, match=r"task 'm': weight 'fc1.weight' is \(64, 30\), the plan"):
        wv.lower([task], plan)
