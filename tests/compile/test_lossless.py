"""Lossless page plans reproduce every task's outputs, in both execution modes."""

import numpy as np
import pytest
import torch
import tvm
from page_plans import past_uint16_ids
from tvm import relax
from tvm_weightvirt.passes.lift_weight_constants import WEIGHT_OPERANDS
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.abi import task_function
from tvm_weightvirt.apps import examples


def _suite():
    tasks, inputs, torch_models = [], {}, {}
    for seed, kind in enumerate(examples.TORCH_MODELS):
        model, x = examples.torch_model(kind, seed)
        tasks.append(wv.Task.from_torch(model, (x,), name=kind))
        inputs[kind], torch_models[kind] = x.numpy(), model
    for name, make in [
        ("resnet", examples.onnx_resnet_block),
        ("inception", examples.onnx_inception_block),
    ]:
        onnx_model, x = make()
        tasks.append(wv.Task.from_onnx(onnx_model, name=name))
        inputs[name] = x
    return tasks, inputs, torch_models


@pytest.fixture(scope="module")
def suite():
    tasks, inputs, torch_models = _suite()
    standalone = {t.name: StandaloneModel(t).run(inputs[t.name]) for t in tasks}
    return tasks, inputs, torch_models, standalone


@pytest.mark.parametrize("mode", ["materialize", "fused"])
def test_lossless_outputs_equal_standalone(suite, mode):
    """Identity page tables copy the same floats: outputs are bit-identical to each model
    compiled alone, over a switch sequence that revisits tasks."""
    tasks, inputs, _, standalone = suite
    plan = wv.PagePlan.lossless(tasks, page_size=100)
    mod = wv.lower(tasks, plan, mode=mode)
    relax.analysis.well_formed(mod)
    runtime = MultitaskRuntime(plan, wv.build(mod, target="llvm"))
    names = [t.name for t in tasks]
    for name in names + names[::-1]:
        out = runtime.run(name, inputs[name])
        assert len(out) == len(standalone[name])
        for got, expected in zip(out, standalone[name]):
            np.testing.assert_array_equal(got, expected, err_msg=f"task {name}, mode {mode}")


@pytest.mark.parametrize("mode", ["materialize", "fused"])
def test_a_plan_past_uint16_page_ids_reads_int32_tables(suite, mode):
    """The kernels read tables in the plan's dtype: a pool padded past 65,536 page ids makes
    them int32, and outputs stay bit-identical to the model compiled alone."""
    tasks, inputs, _, standalone = suite
    task = tasks[0]
    small = wv.PagePlan.lossless([task], page_size=100)
    plan = past_uint16_ids(small)
    assert small.page_table_dtype == np.uint16 and plan.page_table_dtype == np.int32
    runtime = MultitaskRuntime(plan, wv.build(wv.lower([task], plan, mode=mode), target="llvm"))
    for got, expected in zip(runtime.run(task.name, inputs[task.name]), standalone[task.name]):
        np.testing.assert_array_equal(got, expected)


def test_tvm_import_matches_torch(suite):
    """The reference itself is right: TVM's build of each torch model matches torch."""
    tasks, inputs, torch_models, standalone = suite
    for name, model in torch_models.items():
        with torch.no_grad():
            expected = model(torch.from_numpy(inputs[name])).numpy()
        np.testing.assert_allclose(standalone[name][0], expected, atol=1e-5, rtol=0)


def test_every_weight_is_paged(suite):
    """Fused mode: one take per weight, no constant left as a weight operand of any task function,
    and the pool is a parameter of every task."""
    tasks, *_ = suite
    plan = wv.PagePlan.lossless(tasks, page_size=64)
    mod = wv.lower(tasks, plan, mode="fused")
    for task in tasks:
        func = mod[task_function(task.name)]
        assert [p.name for p in func.params[-2:]] == ["pool", "page_table"]
        ops = _op_counts(func)
        assert ops.get("relax.take", 0) == len(task.weights), task.name
        assert _weight_constants(func) == [], task.name
    # conv/matmul/bias weights of the ONNX ResNet block, including the in-graph
    # ConstantOfShape weight (named after its op) and the folded Gemm transpose; its batch
    # norms are folded into the convs (bn1 into conv1's bias, bn2 into a new bias).
    resnet = next(t for t in tasks if t.name == "resnet")
    assert set(resnet.weights) == {
        "conv1.weight",
        "conv1.bias",
        "conv2d_1_weight",
        "bn2.bias",
        "shortcut.weight",
        "matmul_0_weight",
        "fc.bias",
    }
    model = examples.onnx_resnet_block()[0]
    bn2 = {k: _onnx_init(model, f"bn2.{k}") for k in ("scale", "var")}
    scale = bn2["scale"] / np.sqrt(bn2["var"].astype(np.float64) + 1e-5)
    np.testing.assert_allclose(
        resnet.weights["conv2d_1_weight"],
        0.5 * _onnx_init(model, "w2.scale") * scale[:, None, None, None],
        rtol=1e-6,
    )


def test_layout_sizes(suite):
    tasks, *_ = suite
    plan = wv.PagePlan.lossless(tasks, page_size=100)
    mlp = plan.task("mlp").layout
    assert mlp.n_weights == 30 * 64 + 64 + 64 * 2 + 2  # fc1 weight+bias, fc2 weight+bias
    assert mlp.n_pages == 22  # ceil(2114 / 100)
    assert plan.n_pool_pages == sum(t.layout.n_pages for t in plan.tasks.values())
    assert plan.pool_bytes == plan.n_pool_pages * 100 * 4  # pages x weights/page x fp32
    # the zero-padded tail of the last page
    last = plan.pool[plan.task("mlp").page_table[-1]]
    np.testing.assert_array_equal(last[2114 - 2100 :], 0)


def _op_counts(func: relax.Function) -> dict[str, int]:
    counts = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


def _weight_constants(func: relax.Function) -> list:
    """Float constants still feeding a conv / matmul / norm / bias operand."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            for i in WEIGHT_OPERANDS.get(expr.op.name, {}):
                arg = expr.args[i] if i < len(expr.args) else None
                if isinstance(arg, tvm.ir.GenericConst) and arg.value.numpy().size > 1:
                    found.append((expr.op.name, arg.value.shape))

    relax.analysis.post_order_visit(func.body, visit)
    return found


def _onnx_init(model, name):
    from onnx import numpy_helper

    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_torch_intake_prints_no_library_warnings():
    """torch.export's pytree FutureWarning is filtered where intake triggers it (the demo and
    the CLI printed it five times); nothing else is silenced."""
    import warnings

    model, x = examples.torch_model("cnn2d", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wv.Task.from_torch(model, (x,), name="quiet")
    assert [str(w.message) for w in caught] == []
