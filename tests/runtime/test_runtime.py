"""The multitask runtime: in-memory switches never serve stale weights, the scheduler keeps its
promises, concurrent callers get their own task's outputs, bad calls leave it usable."""

import threading

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel, schedule

import tvm_weightvirt as wv
from tvm_weightvirt.abi import task_function, weight_transform_function
from tvm_weightvirt.apps import examples


@pytest.fixture(scope="module")
def setup():
    """Two tasks of the same architecture (different weights, so different outputs) + an MLP."""
    tasks, inputs = [], {}
    for name, kind, seed in [("a", "cnn2d", 0), ("b", "cnn2d", 1), ("m", "mlp", 2)]:
        model, x = examples.torch_model(kind, seed)
        tasks.append(wv.Task.from_torch(model, (x,), name=name))
        inputs[name] = x.numpy()
    inputs["b"] = inputs["a"]  # same input: only the weights tell a from b
    plan = wv.PagePlan.lossless(tasks, page_size=100)
    alone = {t.name: StandaloneModel(t).run(inputs[t.name])[0] for t in tasks}
    libraries = {mode: wv.build(wv.lower(tasks, plan, mode=mode)) for mode in wv.MODES}
    return tasks, inputs, plan, alone, libraries


@pytest.mark.parametrize("mode", ["materialize", "fused"])
def test_switches_never_serve_the_previous_tasks_weights(setup, mode):
    tasks, inputs, plan, alone, libraries = setup
    assert np.abs(alone["a"] - alone["b"]).max() > 1e-3
    runtime = MultitaskRuntime(plan, libraries[mode])
    sequence = ["a", "b", "a", "b", "b", "m", "a"]
    for name in sequence:
        np.testing.assert_array_equal(runtime.run(name, inputs[name])[0], alone[name])
    assert runtime.counters.requests == len(sequence)
    assert runtime.counters.switches == 6  # a b a b (b) m a
    if mode == "materialize":
        # each switch gathers exactly the task's pages: 5 switches to a or b (7 pages), 1 to m (22)
        assert runtime.counters.bytes_gathered == (5 * 7 + 22) * 100 * 4
    else:
        assert runtime.counters.bytes_gathered == 0


def test_weight_transforms_run_at_the_switch_and_change_no_output_bit(setup):
    """Materialize mode runs each task's weight-only ops (here: transposes of dense weights) at
    its switch: the task functions hold none, and over A->B->A->M->A the outputs equal, bit for
    bit, the task's own module compiled with its weight ops inside every call."""
    tasks, inputs, plan, alone, libraries = setup
    library = libraries["materialize"]
    lowered = wv.lower(tasks, plan)
    for t in tasks:
        ops = _relax_ops(lowered[task_function(t.name)])
        assert "relax.permute_dims" not in ops and "relax.matmul" in ops
        assert "relax.permute_dims" in _relax_ops(
            lowered[weight_transform_function(task_function(t.name))]
        )
    vm = {t.name: relax.VirtualMachine(tvm.compile(t.mod, "llvm"), tvm.cpu()) for t in tasks}
    weights = {t.name: [tvm.runtime.tensor(w) for w in t.weights.values()] for t in tasks}
    runtime = MultitaskRuntime(plan, library)
    for name in ["a", "b", "a", "m", "a"]:
        expected = vm[name]["main"](tvm.runtime.tensor(inputs[name]), *weights[name])[0].numpy()
        np.testing.assert_array_equal(runtime.run(name, inputs[name])[0], expected)


def _relax_ops(func: relax.Function) -> set[str]:
    ops = set()
    relax.analysis.post_order_visit(
        func.body, lambda e: isinstance(e, relax.Call) and ops.add(e.op.name)
    )
    return ops


def test_torch_tensors_in_give_the_numpy_inputs_outputs(setup):
    tasks, inputs, plan, alone, libraries = setup
    runtime = MultitaskRuntime(plan, libraries["materialize"])
    for name in ["a", "m"]:
        out = runtime.run(name, torch.from_numpy(inputs[name]))[0]
        np.testing.assert_array_equal(out, alone[name])
    model = StandaloneModel(tasks[2])
    np.testing.assert_array_equal(model.run(torch.from_numpy(inputs["m"]))[0], alone["m"])


def test_explicit_switch_then_run(setup):
    tasks, inputs, plan, alone, libraries = setup
    runtime = MultitaskRuntime(plan, libraries["materialize"])
    runtime.switch("a")
    runtime.switch("b")
    np.testing.assert_array_equal(runtime.run("b", inputs["b"])[0], alone["b"])
    assert runtime.counters.switches == 2  # run("b") found b current


def test_resident_bytes(setup):
    tasks, inputs, plan, alone, libraries = setup
    materialize = MultitaskRuntime(plan, libraries["materialize"])
    fused = MultitaskRuntime(plan, libraries["fused"])
    pool = plan.n_pool_pages * 100 * 4
    tables = (7 + 7 + 22) * 2  # uint16 page tables (every id fits)
    assert fused.resident_bytes == pool + tables
    assert materialize.resident_bytes == pool + tables + 22 * 100 * 4  # buffer: largest task


@pytest.mark.parametrize("policy", ["fifo", "group"])
def test_run_many_serves_every_request_once_in_request_order(setup, policy):
    tasks, inputs, plan, alone, libraries = setup
    runtime = MultitaskRuntime(plan, libraries["materialize"])
    rng = np.random.default_rng(0)
    names = rng.choice(["a", "b", "m"], 40).tolist()
    outputs = runtime.run_many([(n, (inputs[n],)) for n in names], policy=policy, max_wait=4)
    for name, out in zip(names, outputs):
        np.testing.assert_array_equal(out[0], alone[name])
    assert runtime.counters.requests == 40


def test_scheduler_invariants():
    rng = np.random.default_rng(1)
    for trial in range(50):
        tasks = rng.choice(list("abcd"), rng.integers(1, 60)).tolist()
        max_wait = int(rng.integers(0, 10))
        fifo = schedule(tasks, "fifo")
        assert fifo == list(range(len(tasks)))
        order = schedule(tasks, "group", max_wait)
        assert sorted(order) == list(range(len(tasks)))  # every request exactly once
        for position, i in enumerate(order):
            overtaken_by = sum(1 for j in order[:position] if j > i)
            assert overtaken_by <= max_wait, (tasks, max_wait, order)
        for name in set(tasks):  # within a task, arrival order is kept
            mine = [i for i in order if tasks[i] == name]
            assert mine == sorted(mine)
        switches = lambda o: sum(1 for p, q in zip(o, o[1:]) if tasks[p] != tasks[q])  # noqa: E731
        assert switches(order) <= switches(fifo)


def test_grouping_cuts_switches_on_an_interleaved_queue():
    tasks = ["a", "b"] * 10
    assert schedule(tasks, "group", max_wait=100) == list(range(0, 20, 2)) + list(range(1, 20, 2))
    order = schedule(tasks, "group", max_wait=0)
    assert order == list(range(20))  # no overtaking allowed: FIFO


def test_concurrent_runs_from_threads(setup):
    tasks, inputs, plan, alone, libraries = setup
    runtime = MultitaskRuntime(plan, libraries["materialize"])
    errors = []

    def worker(name: str) -> None:
        for _ in range(25):
            out = runtime.run(name, inputs[name])[0]
            if not np.array_equal(out, alone[name]):
                errors.append(name)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ["a", "b", "m", "a"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and runtime.counters.requests == 100


def test_bad_calls_leave_the_runtime_usable(setup):
    tasks, inputs, plan, alone, libraries = setup
    runtime = MultitaskRuntime(plan, libraries["materialize"])
    with pytest.raises(KeyError, match=r"no task 'zz' in this runtime \(has \['a', 'b', 'm'\]\)"):
        runtime.run("zz", inputs["a"])
    with pytest.raises(
        ValueError,
        match=r"task 'a': input 0 must be \(2, 1, 14, 14\) float32, got \(2, 1, 14, 13\) float32",
    ):
        runtime.run("a", inputs["a"][..., :13])
    with pytest.raises(
        ValueError, match=r"task 'm': input 0 must be \(3, 30\) float32, got \(3, 30\) float64"
    ):
        runtime.run("m", inputs["m"].astype(np.float64))
    with pytest.raises(ValueError, match="task 'a' takes 1 inputs, got 2"):
        runtime.run("a", inputs["a"], inputs["a"])
    np.testing.assert_array_equal(runtime.run("a", inputs["a"])[0], alone["a"])


@pytest.mark.parametrize("mode", ["materialize", "fused"])
def test_outputs_and_inputs_are_the_callers_own(setup, mode):
    """Inputs are copied into buffers made once and outputs are views of the VM's per-call
    tensors: a later request overwrites neither an earlier output nor the caller's input, and a
    wrong input shape is refused, never broadcast."""
    tasks, inputs, plan, alone, libraries = setup
    runtime = MultitaskRuntime(plan, libraries[mode])
    x = inputs["a"].copy()
    first = runtime.run("a", x)[0]
    x[:] = 0
    zeros = runtime.run("a", x)[0]
    again = runtime.run("b", inputs["b"])[0]
    np.testing.assert_array_equal(first, alone["a"])
    np.testing.assert_array_equal(again, alone["b"])
    assert not np.array_equal(zeros, first) and (x == 0).all()
    model = StandaloneModel(tasks[2])
    np.testing.assert_array_equal(model.run(inputs["m"])[0], alone["m"])
    with pytest.raises(ValueError, match=r"task 'm': input 0 must be \(3, 30\) float32"):
        model.run(inputs["m"][:1])


def test_library_and_plan_that_do_not_belong_together(setup):
    tasks, inputs, plan, alone, libraries = setup
    other = wv.PagePlan.lossless(tasks[:2], page_size=100)
    with pytest.raises(
        ValueError,
        match=r"do not belong together: plan tasks \['a', 'b'\] != library tasks \['a', 'b', 'm'\]",
    ):
        MultitaskRuntime(other, libraries["fused"])
    bigger = wv.PagePlan(100, np.zeros((plan.n_pool_pages + 1, 100), np.float32), plan.tasks)
    with pytest.raises(
        ValueError,
        match=r"task 'a': library expects 7 pages of a \(36, 100\) pool, plan has 7 of \(37, 100\)",
    ):
        MultitaskRuntime(bigger, libraries["fused"])
    model, x = examples.torch_model("cnn1d", 0)
    swapped = wv.PagePlan.lossless([wv.Task.from_torch(model, (x,), name="m"), *tasks[:2]])
    with pytest.raises(
        ValueError, match="task 'm': the library's weights are not the plan's layout"
    ):
        MultitaskRuntime(swapped, libraries["materialize"])


def test_input_buffers_of_a_function_without_inputs():
    """A function may take no inputs at all: nothing to fill, an empty argument list."""
    import tvm
    from tvm_weightvirt.runtime.io import InputBuffers

    assert InputBuffers([], tvm.cpu()).fill("t", ()) == []
    with pytest.raises(ValueError, match="task 't' takes 0 inputs, got 1"):
        InputBuffers([], tvm.cpu()).fill("t", (np.zeros(1, np.float32),))
