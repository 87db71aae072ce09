"""Intake: ONNX files, torch modules and Relax modules become Tasks (IR + detached weights)."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..passes import (
    ConvWeightsOutputChannelsLast,
    LiftWeightConstants,
    NormalizeTakeIndices,
    WeightsInKernelLayout,
)
from ..passes.normalize_take_indices import TakeIndexError
from ..passes.weights_in_kernel_layout import kernel_layout_axes, permute_weights
from ..plan import TASK_NAME
from .batch_norm_folding import fold_batch_norms


class IntakeError(ValueError):
    """A model could not be taken in: missing or malformed file, unsupported op, bad name."""


@dataclass
class Task:
    """One model: a Relax module whose `main(inputs..., weights...)` takes its weights as
    parameters, and the weights themselves, in parameter order (this order is the layout order).

    `mod["main"]` has the attribute `num_input`: the leading parameters that are real inputs.
    """

    name: str
    mod: tvm.IRModule
    weights: dict[str, np.ndarray]
    output_names: tuple[str, ...] = ()  # the model file's (ONNX); empty: named by position

    def __post_init__(self) -> None:
        check_task_name(self.name)
        try:
            self.input_types
        except IntakeError as err:
            raise IntakeError(f"task '{self.name}': {err}") from None
        func = self.mod["main"]
        weight_params = func.params[self.num_inputs :]
        if len(weight_params) != len(self.weights):
            raise IntakeError(
                f"task '{self.name}': main has {len(weight_params)} weight parameters "
                f"but {len(self.weights)} weights were given"
            )
        for param, (wname, w) in zip(weight_params, self.weights.items()):
            shape, dtype = _tensor_type(param)
            if shape != tuple(w.shape) or dtype != str(w.dtype):
                raise IntakeError(
                    f"task '{self.name}': weight '{wname}' is {tuple(w.shape)} {w.dtype}, "
                    f"parameter '{param.name}' expects {shape} {dtype}"
                )
        bad = [
            n for n, w in self.weights.items() if w.dtype.kind == "f" and not np.isfinite(w).all()
        ]
        if bad:
            raise IntakeError(f"task '{self.name}': weights {bad} hold NaN or inf")

    @property
    def num_inputs(self) -> int:
        return int(self.mod["main"].attrs["num_input"])

    @property
    def input_types(self) -> list[tuple[tuple[int, ...], str]]:
        """(shape, dtype) of each real input."""
        return [_tensor_type(p) for p in self.mod["main"].params[: self.num_inputs]]

    @property
    def n_weights(self) -> int:
        return sum(w.size for w in self.weights.values())

    def in_kernel_layout(self) -> Task:
        """This task with each weight stored as the CPU kernels read it (`WeightsInKernelLayout`:
        dense weights transposed, convolution weights output channels last), same outputs.
        A plan packed from it leaves no weight permute for a context switch to run: a mapped
        switch (`MultitaskRuntime(..., mapped=True)`) then moves no weight bytes."""
        axes = kernel_layout_axes(ConvWeightsOutputChannelsLast()(self.mod)["main"])
        mod = WeightsInKernelLayout()(self.mod)
        return Task(self.name, mod, permute_weights(self.weights, axes), self.output_names)

    # **** intake ****

    @staticmethod
    def from_relax(mod: tvm.IRModule, name: str) -> Task:
        """From a Relax module whose `main` has `num_input` and may carry bound weight constants
        and a `"params"` attribute (as the frontends produce). Inference batch norms are folded
        (`fold_batch_norms`): running statistics never become weights."""
        mod, weights = _lifted_weights(mod, name)
        return _folded_task(name, mod, weights)

    @staticmethod
    def from_torch(model, example_inputs: tuple, name: str) -> Task:
        """From a `torch.nn.Module` via `torch.export` (eval mode; shapes of `example_inputs`).

        Weights are named as in `model.state_dict()` (`conv1.weight`); batch norms are folded
        into the convolution before them (their weights gone) or into a per-channel
        `x * bn.weight + bn.bias` (`fold_batch_norms`), so running statistics are no weights.
        """
        import torch

        check_task_name(name)
        try:
            with quiet_torch_export():
                program = torch.export.export(model.eval(), tuple(example_inputs))
        except Exception as err:
            raise IntakeError(f"task '{name}': cannot export the torch model: {err}") from err
        return Task.from_exported_program(program, name)

    @staticmethod
    def from_pt2(path: str | os.PathLike, name: str) -> Task:
        """From a file written by `torch.export.save` (an `ExportedProgram`)."""
        import torch

        check_task_name(name)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise IntakeError(f"task '{name}': .pt2 file '{path}' does not exist")
        try:
            with quiet_torch_export():
                program = torch.export.load(path)
        except Exception as err:
            raise IntakeError(
                f"task '{name}': '{path}' is not a readable torch.export program: {err}"
            ) from err
        return Task.from_exported_program(program, name)

    @staticmethod
    def from_exported_program(program, name: str) -> Task:
        """From a `torch.export.ExportedProgram`; weights named as in its state dict."""
        from tvm.relax.frontend.torch import from_exported_program

        from .torch_converters import CONVERTERS

        check_task_name(name)
        try:
            with quiet_torch_export():
                mod = from_exported_program(
                    program, keep_params_as_input=True, custom_convert_map=CONVERTERS
                )
        except Exception as err:
            raise IntakeError(f"task '{name}': cannot import the torch model: {err}") from err
        task = Task.from_relax(mod, name)
        targets = {s.arg.name: s.target for s in program.graph_signature.input_specs if s.target}
        task.weights = {targets.get(n, n): w for n, w in task.weights.items()}
        return task

    @staticmethod
    def from_file(path: str | os.PathLike, name: str, input_shape: list[int] | None = None) -> Task:
        """From a model file, by its extension: `.onnx` (`input_shape`: the static shape of its
        one input, where the file's dimensions are symbolic) or `.pt2` (`torch.export.save`)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IntakeError(f"task '{name}': '{path}' is a folder, not a model file")
        if path.endswith(".onnx"):
            shapes = None if input_shape is None else _one_input_shape(path, name, input_shape)
            return Task.from_onnx(path, name=name, shape_dict=shapes)
        if input_shape is not None:
            raise IntakeError(f"task '{name}': an input shape is for ONNX models, not '{path}'")
        if path.endswith(".pt2"):
            return Task.from_pt2(path, name=name)
        raise IntakeError(
            f"task '{name}': '{path}' is neither an .onnx nor a .pt2 (torch.export.save) model"
        )

    @staticmethod
    def from_onnx(
        model: str | os.PathLike,
        name: str,
        shape_dict: dict[str, list[int]] | None = None,
    ) -> Task:
        """From an ONNX file (or a loaded `onnx.ModelProto`); weights that match an initializer
        take its name, weights computed in the graph are named after their op. Without
        `shape_dict`, a symbolic batch dimension (the first) becomes 1. A model quantized in
        QDQ format comes in as float32 with its quantization kept (`onnx_qdq`)."""
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        from .onnx_converters import converters
        from .onnx_qdq import QdqError, fold_qdq, has_qdq
        from .onnx_shape_folding import fold_shape_computations

        check_task_name(name)
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise IntakeError(f"task '{name}': ONNX file '{path}' does not exist")
            try:
                model = onnx.load(path)
                onnx.checker.check_model(model)
            except Exception as err:
                raise IntakeError(
                    f"task '{name}': '{path}' is not a valid ONNX model: {err}"
                ) from err
        bad = [
            i.name
            for i in model.graph.initializer
            if i.data_type in _FLOAT_TYPES and not np.isfinite(onnx.numpy_helper.to_array(i)).all()
        ]
        if bad:
            raise IntakeError(f"task '{name}': weights {bad} hold NaN or inf")
        if has_qdq(model):  # quantized by the user: float weights, each activation range a Clip
            try:
                model = fold_qdq(model)
            except QdqError as err:
                raise IntakeError(f"task '{name}': {err}") from None
        if shape_dict is None:
            shape_dict = _static_batch(model)
        try:
            folded = fold_shape_computations(model, shape_dict or {})
            # TVM prints the op it failed on; the error says it, once
            with converters(), contextlib.redirect_stdout(io.StringIO()):
                mod = from_onnx(folded, shape_dict=shape_dict)
        except Exception as err:
            raise IntakeError(f"task '{name}': cannot import the ONNX model: {err}") from err
        mod, weights = _lifted_weights(mod, name)
        initializer_names: dict[tuple, list[str]] = {}
        for init in model.graph.initializer:
            array = onnx.numpy_helper.to_array(init)
            initializer_names.setdefault(_value_key(array), []).append(init.name)
        renamed = {}
        for n, w in weights.items():
            candidates = initializer_names.get(_value_key(w), [])
            renamed[candidates.pop(0) if candidates else n] = w
        task = _folded_task(name, mod, renamed if len(renamed) == len(weights) else weights)
        task.output_names = tuple(o.name for o in model.graph.output)
        return task


def _lifted_weights(mod: tvm.IRModule, name: str) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """`mod` with every weight a parameter of `main` (`LiftWeightConstants`), and the weights by
    parameter name, in parameter order."""
    check_task_name(name)
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise IntakeError(f"task '{name}': the Relax module has no function 'main'")
    passes = [relax.transform.FoldConstant(), NormalizeTakeIndices(), LiftWeightConstants()]
    try:
        mod = tvm.transform.Sequential(passes)(mod)
    except TakeIndexError as err:
        raise IntakeError(f"task '{name}': {err}") from None
    mod, params = relax.frontend.detach_params(mod)
    func = mod["main"]
    if func.attrs is None or "num_input" not in func.attrs:
        func = func.with_attr("num_input", len(func.params) - len(params.get("main", [])))
        mod["main"] = func
    n_in = int(func.attrs["num_input"])
    names = [p.name for p in func.params[n_in:]]
    return mod, {n: v.numpy() for n, v in zip(names, params.get("main", []))}


def _folded_task(name: str, mod: tvm.IRModule, weights: dict[str, np.ndarray]) -> Task:
    mod["main"], weights = fold_batch_norms(mod["main"], weights)
    return Task(name, mod, weights)


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """torch.export's own pytree deprecation (a FutureWarning per export): nothing a user can
    act on, so it is filtered where we export, not globally."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*LeafSpec.*", FutureWarning)
        yield


def check_task_name(name: str) -> None:
    if not isinstance(name, str) or not TASK_NAME.match(name):
        raise IntakeError(
            f"task name {name!r} must be an identifier (letters, digits, '_'): "
            "it names the task's function in the IR"
        )


def _tensor_type(var: relax.Var) -> tuple[tuple[int, ...], str]:
    ty = var.ty
    dims = ty.shape.values
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        raise IntakeError(
            f"'{var.name}' has a symbolic shape {list(dims)}: give static input shapes "
            "(`wvirt pack --input-shape NAME=1x3x32x32`; in Python, `shape_dict` of from_onnx)"
        )
    return tuple(int(d) for d in dims), str(ty.dtype)


def _value_key(array: np.ndarray) -> tuple:
    return str(array.dtype), array.tobytes()  # shape-free: FoldConstant may reshape a bias


_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def onnx_input_names(path: str) -> list[str]:
    """The real inputs (not initializers) of an ONNX file's graph; [] for a missing file."""
    import onnx

    if not os.path.isfile(path):
        return []
    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _one_input_shape(path: str, name: str, shape: list[int]) -> dict[str, list[int]]:
    """`{the ONNX model's one input: shape}`."""
    if not os.path.isfile(path):
        raise IntakeError(f"task '{name}': ONNX file '{path}' does not exist")
    inputs = onnx_input_names(path)
    if len(inputs) != 1:
        raise IntakeError(f"task '{name}': an input shape for a model of inputs {inputs}")
    return {inputs[0]: list(shape)}


def _static_batch(model) -> dict[str, list[int]] | None:
    """Input shapes with a symbolic first dimension set to 1 (other symbolic dimensions stay,
    and intake names them); None when every input is static."""
    initializers = {i.name for i in model.graph.initializer}
    shapes, changed = {}, False
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if shape and shape[0] is None:
            shape[0], changed = 1, True
        if any(d is None for d in shape):
            return None
        shapes[value.name] = shape
    return shapes if changed else None
