"""Fold an ONNX graph's shape arithmetic into constants before TVM imports it.

An exporter writes `x.chunk(2, 1)` as `Shape -> Gather -> Add -> Div -> Slice`, a channel
shuffle's `reshape(n, g, c // g, h, w)` and a causal `F.pad` as `Shape`/`ConstantOfShape`
chains into the `shape` or `pads` input: computed, so TVM's frontend takes them for dynamic
(`emit_te now only supports Tensor that has ShapeExpr shape`, `Dynamic pads are not supported
yet`). Once the input shapes are static every such value is a constant. This evaluates each
node whose inputs are all known -- `Constant` nodes, integer initializers, the `Shape` of a
tensor whose shape inference made static, and what was folded before -- with ONNX's reference
evaluator, and writes the values consumers still read as `Constant` nodes. Float initializers
are weights and are never folded, so the weights a task gets are the ones it had.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

# Ops whose output is not a function of their inputs, or that hold subgraphs.
_NEVER_FOLDED = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
}


def fold_shape_computations(
    model: onnx.ModelProto, input_shapes: dict[str, list[int]]
) -> onnx.ModelProto:
    """`model` with every node computable from constants and static shapes (`input_shapes`:
    the graph inputs' static shapes) replaced by the constants its consumers read. Folding a
    shape makes the shapes after it static (a Reshape's output, once its shape is a
    constant), so it repeats, with shape inference run again, until nothing more folds."""
    while True:
        folded, progress = _fold_once(model, input_shapes)
        if not progress:
            return folded
        model = folded


def _fold_once(
    model: onnx.ModelProto, input_shapes: dict[str, list[int]]
) -> tuple[onnx.ModelProto, bool]:
    """One pass of folding, and whether it folded any node but a Constant."""
    graph = model.graph
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:  # shape inference from the shapes the import will use
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    static = _static_shapes(onnx.shape_inference.infer_shapes(fixed))
    known = {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if np.issubdtype(helper.tensor_dtype_to_np_dtype(init.data_type), np.integer)
    }
    opsets = {o.domain or "": o.version for o in model.opset_import}
    folded = set()  # node positions (a protobuf node's Python object is not kept)
    for position, node in enumerate(graph.node):
        inputs = [name for name in node.input if name]
        if node.op_type in _NEVER_FOLDED or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Shape" and inputs[0] in static:
            values = [_shape_of(node, static[inputs[0]])]
        elif node.op_type == "Constant" or (inputs and all(n in known for n in inputs)):
            try:  # as the model's opset defines the op
                evaluator = ReferenceEvaluator(node, opsets=opsets)
                values = evaluator.run(None, {n: known[n] for n in inputs})
            except Exception:  # left to TVM's importer, which names what it cannot take
                continue
        else:
            continue
        known.update(zip(node.output, values))
        folded.add(position)
    progress = any(graph.node[p].op_type != "Constant" for p in folded)
    if not progress:
        return model, False
    kept = [node for position, node in enumerate(graph.node) if position not in folded]
    read = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    constants = [
        helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)
        )
        for position, node in enumerate(graph.node)
        if position in folded
        for name in node.output
        if name in read
        for value in [known[name]]
    ]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(constants + kept)
    return out, True


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    graph = model.graph
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if all(d is not None for d in dims):
            shapes[value.name] = dims
    return shapes


def _shape_of(node: onnx.NodeProto, shape: list[int]) -> np.ndarray:
    """What `Shape` gives for a tensor of `shape` (with its `start` / `end` attributes)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[start:end], np.int64)
