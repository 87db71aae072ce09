"""Take in an ONNX model quantized in QDQ format (QuantizeLinear / DequantizeLinear around each
Conv / Gemm, as ONNX Runtime's `quantize_static` writes it) as a float graph that keeps its
quantization: each dequantized weight becomes a float32 initializer (its int8 codes times its
scales), and each activation's QuantizeLinear -> DequantizeLinear pair a Clip to the range its
scale and zero point can hold. `quantize_int8` reads that Clip as the tensor's range, so the
int8 task gets the model's own weight codes and activation scales (no calibration needed where
every quantized tensor has one)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class QdqError(ValueError):
    """A QDQ pattern this intake does not take (names the node)."""


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def fold_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every DequantizeLinear of an initializer folded into a float32 initializer
    and every QuantizeLinear whose outputs only DequantizeLinear nodes (of the same scale and
    zero point) read replaced by a Clip to `[(qmin - zp) * scale, (qmax - zp) * scale]`."""
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # Constant nodes hold scales too
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    new_initializers, nodes, dropped = [], [], set()
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in constants:
            codes, scale, zero_point, axis = _qparams(node, constants)
            weight = (codes.astype(np.float64) - _along(zero_point, axis, codes.ndim)) * _along(
                scale, axis, codes.ndim
            )
            new_initializers.append(
                numpy_helper.from_array(weight.astype(np.float32), node.output[0])
            )
        elif node.op_type == "QuantizeLinear":
            pairs = readers.get(node.output[0], [])
            if not pairs or any(r.op_type != "DequantizeLinear" for r in pairs):
                raise QdqError(
                    f"QuantizeLinear '{node.name or node.output[0]}': its output is read by "
                    f"{sorted({r.op_type for r in pairs}) or 'nothing'}, not only by "
                    "DequantizeLinear (int8 tensors between ops are not taken in)"
                )
            _, scale, zero_point, axis = _qparams(node, constants, quantize=True)
            if np.size(scale) != 1:
                raise QdqError(
                    f"QuantizeLinear '{node.name or node.output[0]}': per-axis "
                    "activation scales are not taken in (one scale per tensor)"
                )
            info = np.iinfo(zero_point.dtype)
            lo = (info.min - float(zero_point.reshape(-1)[0])) * float(scale.reshape(-1)[0])
            hi = (info.max - float(zero_point.reshape(-1)[0])) * float(scale.reshape(-1)[0])
            for pair in pairs:
                _, s2, z2, _ = _qparams(pair, constants)
                if not (np.array_equal(s2, scale) and np.array_equal(z2, zero_point)):
                    raise QdqError(
                        f"DequantizeLinear '{pair.name or pair.output[0]}': another "
                        "scale or zero point than its QuantizeLinear's"
                    )
                bounds = [f"{pair.output[0]}__qdq_min", f"{pair.output[0]}__qdq_max"]
                new_initializers += [
                    numpy_helper.from_array(np.array(lo, np.float32), bounds[0]),
                    numpy_helper.from_array(np.array(hi, np.float32), bounds[1]),
                ]
                nodes.append(helper.make_node("Clip", [node.input[0], *bounds], [pair.output[0]]))
                dropped.add(id(pair))
        elif node.op_type == "DequantizeLinear":
            if id(node) not in dropped:
                raise QdqError(
                    f"DequantizeLinear '{node.name or node.output[0]}' reads '{node.input[0]}', "
                    "neither an initializer nor a QuantizeLinear's output"
                )
        else:
            nodes.append(node)
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(nodes)
    read = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in read]
    del folded.graph.initializer[:]
    folded.graph.initializer.extend([*kept, *new_initializers])
    return folded


def _qparams(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], quantize: bool = False
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, int]:
    """(codes or None, scale, zero point, axis) of a QuantizeLinear / DequantizeLinear."""
    where = f"{node.op_type} '{node.name or node.output[0]}'"
    if node.input[1] not in constants:
        raise QdqError(f"{where}: its scale '{node.input[1]}' is not a constant")
    scale = constants[node.input[1]].astype(np.float64)
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in constants:
            raise QdqError(f"{where}: its zero point '{node.input[2]}' is not a constant")
        zero_point = constants[node.input[2]]
    else:
        zero_point = np.zeros(scale.shape, np.uint8)  # ONNX's default: uint8, zero
    if zero_point.dtype not in (np.int8, np.uint8, np.int32):
        raise QdqError(f"{where}: zero point of {zero_point.dtype} (int8, uint8 or int32)")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    codes = None if quantize else constants.get(node.input[0])
    return codes, scale, zero_point, axis


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-axis vector (or a scalar) shaped to broadcast along `axis` of an ndim array."""
    values = np.asarray(values, np.float64)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = values.size
    return values.reshape(shape)
