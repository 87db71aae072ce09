"""int8 tasks: a float32 task's weights quantized per output channel and its activations per
tensor, calibrated post-training on the user's samples (`passes.QuantizeInt8` rewrites the graph)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.quantize_int8 import ActivationRanges, QuantizeError, QuantizeInt8, bindings_of
from .task import Task

CALIBRATION_SAMPLES = 256  # the most samples `quantize_int8` runs the float graph on
# A tensor's range: the 0.01th to the 99.99th percentile of its values, not its min and max: a
# rare outlier would stretch the scale of every value (on the suite: 8 -> 10 tasks within
# 1 pp of float32, see docs/cortex-m.md)
RANGE_PERCENTILE = 99.99
KEPT_VALUES = 1 << 20  # per tensor, a seeded sample of at most this many values is kept


def quantize_int8(
    task: Task, samples: np.ndarray | None, max_samples: int = CALIBRATION_SAMPLES
) -> Task:
    """`task` with int8 kernels: conv / matmul weights int8 per output channel, activations
    int8 with the scale and zero point of the range they take on `samples` (one array of
    samples shaped like the task's input without its batch axis: `[N, *input[1:]]`), sums in
    int32 and integer requantization. Inputs and outputs stay float32. The int8 weights and
    int32 biases are constants of the returned task's graph (it has no weight parameters).
    A tensor a clip bounds (a QDQ model's quantization) takes the clip's range; `samples`
    None: every quantized tensor must have one.

    Raises QuantizeError naming the task when the samples are empty, of another shape or all
    equal, or when a tensor is 0 on every sample or has no range.
    """
    mod = _weights_bound(task)
    if samples is None:
        func = mod["main"]
        ranges = ActivationRanges([None] * len(func.params), [None] * len(bindings_of(func)))
    else:
        ranges = calibrate(task.name, mod, _calibration_batches(task, samples, max_samples))
    try:
        quantized = QuantizeInt8(ranges)(mod)
    except QuantizeError as err:
        raise QuantizeError(f"task '{task.name}': {err}") from None
    return Task(task.name, relax.transform.FoldConstant()(quantized), {}, task.output_names)


def calibrate(name: str, mod: tvm.IRModule, batches: list[np.ndarray]) -> ActivationRanges:
    """The float range (RANGE_PERCENTILE) of every parameter and binding of `mod["main"]` over
    `batches` (each one input): the float graph compiled with every value as an output."""
    func = mod["main"]
    flat = relax.transform.ToNonDataflow()(mod)["main"]
    values = [*flat.params, *(b.var for b in bindings_of(flat))]
    if len(values) != len(func.params) + len(bindings_of(func)):
        raise QuantizeError(f"task '{name}': the graph changed shape when made non-dataflow")
    floats = [i for i, v in enumerate(values) if _is_float32_tensor(v)]
    outputs = [values[i] for i in floats]
    probe = relax.Function(
        flat.params,
        relax.SeqExpr(flat.body.blocks, relax.Tuple(outputs)),
        relax.TupleType([v.ty for v in outputs]),
        attrs=flat.attrs,
    )
    vm = relax.VirtualMachine(tvm.compile(tvm.IRModule({"main": probe}), "llvm"), tvm.cpu())
    rng = np.random.default_rng(0)
    kept: list[list[np.ndarray]] = [[] for _ in floats]
    for batch in batches:
        outs = vm["main"](tvm.runtime.tensor(batch))
        for j in range(len(floats)):
            a = outs[j].numpy().reshape(-1)
            per_batch = max(1, KEPT_VALUES // len(batches))
            kept[j].append(a if a.size <= per_batch else rng.choice(a, per_batch, replace=False))
    ranges: list = [None] * len(values)
    for j, i in enumerate(floats):
        a = np.concatenate(kept[j])
        if not np.isfinite(a).all():
            raise QuantizeError(f"task '{name}': tensor '{values[i].name}' is not finite")
        lo, hi = np.percentile(a, [100 - RANGE_PERCENTILE, RANGE_PERCENTILE])
        ranges[i] = (float(lo), float(hi))
    n_params = len(func.params)
    return ActivationRanges(ranges[:n_params], ranges[n_params:])


def _weights_bound(task: Task) -> tvm.IRModule:
    """`task.mod` with its weights as constants, weight-only ops (transposes) folded and
    aliases (`y = x`, a tuple's item) replaced by what they name."""
    func = task.mod["main"]
    weights = dict(zip(func.params[task.num_inputs :], task.weights.values()))
    bound = func.bind_params({p: tvm.runtime.tensor(w) for p, w in weights.items()})
    mod = tvm.IRModule({"main": bound.with_attr("num_input", task.num_inputs)})
    return relax.transform.CanonicalizeBindings()(relax.transform.FoldConstant()(mod))


def _calibration_batches(task: Task, samples: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """`samples` as batches of the task's one input (the first `max_samples`)."""
    if task.num_inputs != 1:
        raise QuantizeError(
            f"task '{task.name}': int8 takes models of one input, not {task.num_inputs}"
        )
    ((shape, dtype),) = task.input_types
    samples = np.asarray(samples) if samples is not None else np.zeros((0, *shape[1:]))
    if len(samples) == 0:
        raise QuantizeError(f"task '{task.name}': no calibration samples (give the task's data)")
    if tuple(samples.shape[1:]) != tuple(shape[1:]):
        raise QuantizeError(
            f"task '{task.name}': calibration samples are {tuple(samples.shape[1:])} each, "
            f"the model's input takes {tuple(shape[1:])} (of {tuple(shape)})"
        )
    samples = samples[:max_samples].astype(dtype)
    if (samples == samples[:1]).all():
        raise QuantizeError(
            f"task '{task.name}': the {len(samples)} calibration samples are all equal: "
            "activation ranges need varied data"
        )
    batch = shape[0]
    usable = len(samples) // batch * batch
    if usable == 0:
        raise QuantizeError(
            f"task '{task.name}': {len(samples)} samples, the input's batch is {batch}"
        )
    return [samples[i : i + batch] for i in range(0, usable, batch)]


def _is_float32_tensor(var: relax.Var) -> bool:
    ty = var.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"
