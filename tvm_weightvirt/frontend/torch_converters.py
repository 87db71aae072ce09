"""Converters of torch ops that TVM's ExportedProgram frontend lacks or converts to what the
rest of the project cannot run, passed to it as its `custom_convert_map`: each takes the fx
node and the importer and emits Relax ops."""

from __future__ import annotations

from tvm import relax


def _reduction(op):
    """`aten.amax` / `aten.amin`: (x, dim=[], keepdim=False); an empty dim reduces all."""

    def convert(node, importer):
        x, *rest = importer.retrieve_args(node)
        dim = rest[0] if rest else node.kwargs.get("dim", [])
        keepdim = rest[1] if len(rest) > 1 else node.kwargs.get("keepdim", False)
        return importer.block_builder.emit(op(x, list(dim) or None, keepdims=bool(keepdim)))

    return convert


def _extremum_along(value_op, index_op):
    """`aten.max.dim` / `aten.min.dim`: (values, indices) as a reduction and an arg-reduction;
    TVM's converter is a `topk`, which the C executor has no kernel for."""

    def convert(node, importer):
        x, dim, *rest = importer.retrieve_args(node)
        keepdim = bool(rest[0] if rest else node.kwargs.get("keepdim", False))
        bb = importer.block_builder
        values = bb.emit(value_op(x, [dim], keepdims=keepdim))
        return bb.emit(relax.Tuple([values, bb.emit(index_op(x, dim, keepdims=keepdim))]))

    return convert


CONVERTERS = {
    "amax.default": _reduction(relax.op.max),
    "amin.default": _reduction(relax.op.min),
    "max.dim": _extremum_along(relax.op.max, relax.op.argmax),
    "min.dim": _extremum_along(relax.op.min, relax.op.argmin),
}
