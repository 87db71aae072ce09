"""The default CPU schedules (`compile/cpu_schedule.py`) and the conv weight layout they read:
which kernels they schedule, the loop nest they give, and outputs equal to TVM's unscheduled
kernels up to float rounding."""

import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import dlight as dl
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T
from tvm_weightvirt.passes import ConvWeightsOutputChannelsLast
from tvm_weightvirt.runtime import StandaloneModel
from tvm_weightvirt.runtime.io import outputs_to_numpy

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.compile.cpu_schedule import (
    DEFAULT_RULES,
    MAX_SCALAR_ACCUMULATORS,
    MCU_RULES,
    _register_tile,
    default_pipeline,
)
from tvm_weightvirt.targets.mcu.executor import KERNEL_PIPELINE


def _example_tasks():
    for seed, kind in enumerate(examples.TORCH_MODELS):
        model, x = examples.torch_model(kind, seed)
        yield wv.Task.from_torch(model, (x,), name=kind), x.numpy()
    for make in (examples.onnx_resnet_block, examples.onnx_inception_block):
        onnx_model, x = make()
        yield wv.Task.from_onnx(onnx_model, name=make.__name__), x


@pytest.mark.parametrize("task, x", list(_example_tasks()), ids=lambda v: getattr(v, "name", ""))
def test_scheduled_outputs_equal_tvms_default_kernels(task, x):
    """Same sums in the same order: only FMA contraction may move the last bits (padded,
    residual, batch-normed and pooled nets included)."""
    target = tvm.target.Target("llvm")
    default = relax.VirtualMachine(
        tvm.compile(task.mod, target, relax_pipeline=relax.get_default_pipeline(target)),
        tvm.cpu(),
    )
    weights = [tvm.runtime.tensor(w) for w in task.weights.values()]
    expected = outputs_to_numpy(default["main"](tvm.runtime.tensor(x), *weights))
    for out, want in zip(StandaloneModel(task).run(x), expected, strict=True):
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@I.ir_module
class DenseAndConv:
    @R.function
    def main(
        x: R.Tensor((1, 8, 10, 10), "float32"),
        w: R.Tensor((32, 8, 3, 3), "float32"),
        d: R.Tensor((64, 512), "float32"),
    ) -> R.Tensor((1, 64), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.conv2d(x, w)
            z = R.nn.leakyrelu(y, 0.2)
            p = R.nn.max_pool2d(z, pool_size=[2, 2], strides=[2, 2])
            f = R.reshape(p, [1, 512])
            o = R.matmul(f, R.permute_dims(d, [1, 0]))
            R.output(o)
        return o


def _scheduled(mcpu: str, module: tvm.IRModule = DenseAndConv) -> dict[str, tvm.tirx.PrimFunc]:
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    mod = ConvWeightsOutputChannelsLast()(module)
    with target:
        mod = tvm.transform.Sequential(
            [*cpu.legalize_passes(target), dl.ApplyDefaultSchedule(*DEFAULT_RULES)]
        )(mod)
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize("mcpu, lanes", [("haswell", 8), ("skylake-avx512", 16)])
def test_dense_and_conv_get_vectors_of_output_channels(mcpu, lanes):
    """The conv (weights HWIO) and the dense kernel (weight transposed) accumulate vectors of
    the target's width of output channels in registers, their epilogue fused in; the two
    weight permutes copy tiles; max pooling (no weight) keeps TVM's default."""
    funcs = _scheduled(mcpu)
    scheduled = {n for n, f in funcs.items() if (f.attrs or {}).get("tirx.is_scheduled")}
    conv = next(n for n in funcs if "conv2d" in n)
    dense = next(n for n in funcs if "matmul" in n)
    permutes = {n for n in funcs if n.startswith("transpose")}
    assert len(permutes) == 2 and scheduled == {conv, dense, *permutes}, sorted(funcs)
    for name in permutes:  # written a vector of the output's innermost dimension at a time
        assert f"T.vectorized(T.int64({lanes}))" in funcs[name].script()
    assert "leaky" in conv  # the activation is fused into the conv's kernel
    for name in (conv, dense):
        script = funcs[name].script()
        assert f"T.vectorized(T.int64({lanes}))" in script
        assert 'scope="local"' in script  # the accumulators
        assert "T.init()" not in script  # zeroed once per block of outputs, before the sums
        assert "T.parallel" not in script  # small kernels: a fork/join costs more than it saves


def test_register_tiles_load_least_per_multiply_add():
    """(vectors of output channels, rows of outputs) per block of accumulators: each step
    loads a vector per vector and broadcasts an input per row."""
    assert _register_tile(8, [56, 56]) == (2, [1, 4])  # 8 sums, 6 loads
    assert _register_tile(32, [14, 14]) == (2, [2, 2])  # a 2 x 2 tile: 4 does not divide 14
    assert _register_tile(64, [7, 7]) == (2, [1, 7])  # 14 sums: 12 would give 1 x 7, 8 loads
    assert _register_tile(125, []) == (5, [])  # a dense layer at batch 1: vectors only


@I.ir_module
class BigConvAndDepthwise:
    @R.function
    def main(
        x: R.Tensor((1, 32, 56, 56), "float32"),
        w: R.Tensor((64, 32, 3, 3), "float32"),
        dw: R.Tensor((64, 1, 3, 3), "float32"),
    ) -> R.Tensor((1, 64, 56, 56), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.relu(R.nn.conv2d(x, w, padding=[1, 1, 1, 1]))
            z = R.nn.conv2d(y, dw, padding=[1, 1, 1, 1], groups=64)
            R.output(z)
        return z


def test_big_kernels_run_in_parallel_and_depthwise_reads_rows_as_vectors():
    """A conv of 58 M multiply-adds runs its blocks on the thread pool, its padding a copy of
    its own (no bounds test among the multiply-adds); a depthwise conv (weights OIHW, each
    output channel its own) accumulates vectors along the rows, the weight broadcast. Both
    compute TVM's default kernels' outputs."""
    funcs = _scheduled("haswell", BigConvAndDepthwise)
    conv, depthwise = sorted((n for n in funcs if "conv2d" in n), key=lambda n: "relu" not in n)
    for name in (conv, depthwise):
        script = funcs[name].script()
        assert (funcs[name].attrs or {}).get("tirx.is_scheduled"), name
        assert "T.parallel" in script and "T.vectorized(T.int64(8))" in script
        assert 'T.sblock("pad_temp")' in script  # padding kept as its own stage

    target = tvm.target.Target("llvm")
    rng = np.random.default_rng(0)
    args = [
        rng.normal(size=[int(d) for d in p.ty.shape]).astype("float32")
        for p in BigConvAndDepthwise["main"].params
    ]
    outputs = []
    for pipeline in (relax.get_default_pipeline(target), default_pipeline(target)):
        mod = ConvWeightsOutputChannelsLast()(BigConvAndDepthwise)
        vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=pipeline), tvm.cpu())
        outputs.append(vm["main"](*map(tvm.runtime.tensor, args)).numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-4)


@I.ir_module
class SymbolicBatch:
    @R.function
    def main(x: R.Tensor(("n", 8), "float32"), w: R.Tensor((8, 16), "float32")) -> R.Tensor(
        ("n", 16), "float32"
    ):
        n = T.int64()
        with R.dataflow():
            y: R.Tensor((n, 16), "float32") = R.matmul(x, w)
            R.output(y)
        return y


def test_a_kernel_with_symbolic_shapes_keeps_tvms_default():
    """Tiles need known extents: a dense layer over a symbolic batch is left unscheduled, and
    the module still builds and computes."""
    target = tvm.target.Target("llvm")
    with target:
        mod = tvm.transform.Sequential(
            [*cpu.legalize_passes(target), dl.ApplyDefaultSchedule(*DEFAULT_RULES)]
        )(SymbolicBatch)
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert funcs and not any((f.attrs or {}).get("tirx.is_scheduled") for f in funcs)
    vm = relax.VirtualMachine(
        tvm.compile(SymbolicBatch, target, relax_pipeline=default_pipeline(target)), tvm.cpu()
    )
    x, w = np.ones((3, 8), "float32"), np.ones((8, 16), "float32")
    np.testing.assert_array_equal(
        vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy(), x @ w
    )


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_mbconv"])
def test_epilogues_the_rule_cannot_inline_keep_tvms_default(arch):
    """Hardswish and SiLU (sigmoid x x) epilogues of a squeeze-excite block make
    `reverse_compute_inline` fail inside TVM (an InternalError, not a ScheduleError): the
    kernel keeps TVM's default schedule, and the build computes what torch does."""
    import torch

    from tvm_weightvirt.apps.architectures import architecture

    model, shape = architecture(arch)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    out = StandaloneModel(wv.Task.from_torch(model, (x,), name=arch)).run(x.numpy())[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def _c_kernels(scheduled: bool) -> dict[str, tvm.tirx.PrimFunc]:
    """DenseAndConv's kernels as the Cortex-M build makes them (legalized and fused, weights
    as given), scheduled by `MCU_RULES` or left as TVM writes them."""
    mod = KERNEL_PIPELINE(DenseAndConv)
    if scheduled:
        with tvm.target.Target({"kind": "c"}):
            mod = dl.ApplyDefaultSchedule(*MCU_RULES)(mod)
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def _c_module(func: tvm.tirx.PrimFunc) -> tvm.runtime.Module:
    return tvm.tirx.build(func.with_attr("global_symbol", "main"), target="c")


def _run_as_c(func: tvm.tirx.PrimFunc, args: list[np.ndarray], folder) -> np.ndarray:
    """`func` built by TVM's C codegen and the host compiler, run on `args` (the last is the
    output)."""
    path = str(folder / f"{len(list(folder.iterdir()))}.so")
    _c_module(func).export_library(path)
    tensors = [tvm.runtime.tensor(a) for a in args]
    tvm.runtime.load_module(path)["main"](*tensors)
    return tensors[-1].numpy()


def test_c_kernels_keep_their_sums_in_registers_and_compute_the_same_bits(tmp_path):
    """The C target's rule: the conv, the dense layer and the max pool keep a tile of at most
    MAX_SCALAR_ACCUMULATORS sums in a small array TVM puts on the stack (not a workspace it
    allocates), zeroed before the reduction, the activation applied as the tile is stored; the
    reshape keeps TVM's default. Compiled as C, each computes the unscheduled kernel's bits (the
    max pool's window is not unrolled: TVM's C codegen would reuse a stale load there)."""
    default, funcs = _c_kernels(False), _c_kernels(True)
    scheduled = {n for n, f in funcs.items() if (f.attrs or {}).get("tirx.is_scheduled")}
    assert scheduled == {n for n in funcs if "reshape" not in n}, sorted(funcs)
    rng = np.random.default_rng(0)
    for name in sorted(scheduled):
        script = funcs[name].script()
        assert "T.init()" not in script
        source = _c_module(funcs[name]).inspect_source()
        (tile,) = map(int, re.findall(r"float \w+_global_ptr\[(\d+)\];", source))
        assert 1 < tile <= MAX_SCALAR_ACCUMULATORS, name
        assert "TVMBackendAllocWorkspace" not in source, name
        shapes = [[int(d) for d in p.ty.shape] for p in funcs[name].params]
        args = [rng.normal(size=s).astype(np.float32) for s in shapes[:-1]]
        args.append(np.zeros(shapes[-1], np.float32))
        np.testing.assert_array_equal(
            _run_as_c(funcs[name], args, tmp_path), _run_as_c(default[name], args, tmp_path)
        )
    conv = next(n for n in funcs if "conv2d" in n)
    assert "leaky" in conv and "T.unroll" in funcs[conv].script()


@I.ir_module
class ConvSiLU:
    @R.function
    def main(
        x: R.Tensor((1, 8, 10, 10), "float32"), w: R.Tensor((16, 8, 3, 3), "float32")
    ) -> R.Tensor((1, 16, 8, 8), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.conv2d(x, w)
            o = R.multiply(y, R.sigmoid(y))
            R.output(o)
        return o


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_a_silu_epilogue_is_fused_into_the_scheduled_conv(mcpu):
    """SiLU reads the conv's output twice (`y * sigmoid(y)`), where inlining the epilogue
    block by block into the store fails inside TVM: the conv is scheduled all the same, its
    epilogue fused, and computes what TVM's default kernel does."""
    funcs = _scheduled(mcpu, ConvSiLU)
    (conv,) = [n for n in funcs if "conv2d" in n]
    assert "sigmoid" in conv and (funcs[conv].attrs or {}).get("tirx.is_scheduled")
    assert 'scope="local"' in funcs[conv].script()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, 10, 10)).astype(np.float32)
    w = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    task = wv.Task("conv_silu", ConvSiLU, {"w": w})
    target = tvm.target.Target("llvm")
    default = relax.VirtualMachine(
        tvm.compile(ConvSiLU, target, relax_pipeline=relax.get_default_pipeline(target)),
        tvm.cpu(),
    )
    expected = default["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_allclose(StandaloneModel(task).run(x)[0], expected, rtol=1e-5, atol=1e-5)
