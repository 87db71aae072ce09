"""Bad input fails early with an error naming the culprit."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples


def test_missing_onnx_file(tmp_path):
    with pytest.raises(wv.IntakeError, match=r"task 'har': ONNX file '.*nope.onnx' does not exist"):
        wv.Task.from_onnx(tmp_path / "nope.onnx", name="har")


def test_malformed_onnx_file(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf\xff\xff")
    with pytest.raises(
        wv.IntakeError, match=r"task 'har': '.*garbage.onnx' is not a valid ONNX model"
    ):
        wv.Task.from_onnx(path, name="har")


def test_unsupported_ops_are_all_named(tmp_path):
    """Celu and Swish have no TVM converter: both are named, in one error."""
    nodes = [helper.make_node("Celu", ["x"], ["a"]), helper.make_node("Swish", ["a"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    path = tmp_path / "celu.onnx"
    onnx.save(model, path)
    with pytest.raises(
        wv.IntakeError, match=r"task 'act': cannot import the ONNX model: .*Celu.*Swish|Swish.*Celu"
    ):
        wv.Task.from_onnx(path, name="act")


def test_symbolic_input_shape_asks_for_static_shapes():
    """A symbolic batch becomes 1 (the usual export of a user's model); any other symbolic
    dimension needs a static shape."""
    model, _ = examples.onnx_inception_block()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert wv.Task.from_onnx(model, name="sym").input_types == [((1, 3, 10, 10), "float32")]
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(
        wv.IntakeError, match="task 'sym': 'x' has a symbolic shape .*give static input shapes"
    ):
        wv.Task.from_onnx(model, name="sym")
    task = wv.Task.from_onnx(model, name="sym", shape_dict={"x": [2, 3, 10, 10]})
    assert task.input_types == [((2, 3, 10, 10), "float32")]


def test_from_file_picks_the_loader_by_extension_and_names_what_it_cannot_load(tmp_path):
    model, _ = examples.onnx_inception_block()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(model, tmp_path / "sym.onnx")
    task = wv.Task.from_file(tmp_path / "sym.onnx", "sym", input_shape=[1, 3, 10, 10])
    assert task.input_types == [((1, 3, 10, 10), "float32")]
    (tmp_path / "model.tflite").write_bytes(b"")
    (tmp_path / "folder.onnx").mkdir()
    for path, input_shape, message in [
        ("model.tflite", None, "'.*model.tflite' is neither an .onnx nor a .pt2"),
        ("folder.onnx", None, "'.*folder.onnx' is a folder, not a model file"),
        ("model.pt2", [1, 3], "an input shape is for ONNX models, not '.*model.pt2'"),
        ("nope.onnx", [1, 3], "ONNX file '.*nope.onnx' does not exist"),
    ]:
        with pytest.raises(wv.IntakeError, match=f"task 'm': {message}"):
            wv.Task.from_file(tmp_path / path, "m", input_shape)


def _mlp_task(name: str, seed: int = 0) -> wv.Task:
    model, x = examples.torch_model("mlp", seed)
    return wv.Task.from_torch(model, (x,), name=name)


def test_duplicate_task_names():
    a, b = _mlp_task("har"), _mlp_task("har", seed=1)
    with pytest.raises(ValueError, match=r"duplicate task names: \['har'\]"):
        wv.PagePlan.lossless([a, b])


@pytest.mark.parametrize("page_size", [0, -100])
def test_page_size_must_be_positive(page_size):
    with pytest.raises(ValueError, match=f"page size must be > 0 weights, got {page_size}"):
        wv.PagePlan.lossless([_mlp_task("a")], page_size=page_size)


def test_page_size_must_be_an_integer():
    with pytest.raises(ValueError, match="page size must be an integer, got 100.5"):
        wv.PagePlan.lossless([_mlp_task("a")], page_size=100.5)


@pytest.mark.parametrize("name", ["har-1", "", "1st", "a b"])
def test_task_name_must_be_an_identifier(name):
    with pytest.raises(wv.IntakeError, match="must be an identifier"):
        _mlp_task(name)


def test_torch_model_that_cannot_be_exported():
    class DataDependent(examples.Mlp):
        def forward(self, x):
            return x[x > 0]  # data-dependent output shape

    with pytest.raises(wv.IntakeError, match="task 'dyn': cannot import the torch model"):
        wv.Task.from_torch(DataDependent().eval(), (torch.ones(3, 30),), name="dyn")


def test_lower_rejects_tasks_missing_from_the_plan():
    a, b = _mlp_task("a"), _mlp_task("b", seed=1)
    plan = wv.PagePlan.lossless([a])
    with pytest.raises(
        ValueError, match=r"tasks \['a', 'b'\] do not match the page plan's \['a'\]"
    ):
        wv.lower([a, b], plan)


def test_lower_rejects_an_unknown_mode():
    a = _mlp_task("a")
    with pytest.raises(ValueError, match="mode must be one of .*got 'lazy'"):
        wv.lower([a], wv.PagePlan.lossless([a]), mode="lazy")


def test_build_refuses_a_module_not_from_lower():
    """The mode is the lowered module's `wv.mode` attribute: a task's own module has none."""
    a = _mlp_task("a")
    with pytest.raises(ValueError, match="build takes a module from `lower`.*'wv.mode'"):
        wv.build(a.mod)
