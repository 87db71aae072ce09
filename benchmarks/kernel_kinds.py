"""Where a real-size model's time goes, by kind of kernel: ResNet-50 (the onnx wheel's zoo graph,
seeded weights; `--model` for another of `benchmarks.real_size`'s), compiled alone for this
machine's CPU with the default schedules, each kernel timed alone on the arguments a call gave it
(TVM's `time_evaluator`, on `TVM_NUM_THREADS` threads: set it, TVM takes half the logical CPUs
on x86 by default). Per kind (conv 1x1, 3x3, 7x7, strided, depthwise / grouped, dense, pooling,
other): milliseconds, share of the kernels' sum, multiply-adds and GFLOP/s."""

from __future__ import annotations

import math

import numpy as np

from benchmarks._common import run
from benchmarks.call_overhead import kernel_times, launched_kernels


def measure(quick: bool, model: str) -> dict:
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm_weightvirt.passes import ConvWeightsOutputChannelsLast, LiftWeightTransforms
    from tvm_weightvirt.runtime import StandaloneModel

    import tvm_weightvirt as wv
    from benchmarks.real_size import onnx_model

    task = wv.Task.from_onnx(onnx_model(model), name=model)
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    plain = StandaloneModel(task, target=target)
    ((shape, dtype),) = task.input_types
    x = tvm.runtime.tensor(np.random.default_rng(0).normal(size=shape).astype(dtype))
    args = [x, *plain.weights]
    launches: dict[str, int] = {}
    for symbol, _ in launched_kernels(plain.executable, "main", args):
        launches[symbol] = launches.get(symbol, 0) + 1
    times = kernel_times(plain.executable, "main", args, 3, number=3 if quick else 20)
    # the kernels as the build legalized them (the same names), to read their shapes
    mod = LiftWeightTransforms()(ConvWeightsOutputChannelsLast()(task.mod))
    with target:
        mod = tvm.transform.Sequential(cpu.legalize_passes(target))(mod)
    kernels = {}
    for symbol, us in times.items():
        kind, macs = kernel_kind(mod[symbol])
        kernels[symbol] = {
            "kind": kind,
            "ms": us / 1e3,
            "launches": launches[symbol],
            "mmacs": macs * launches[symbol] / 1e6,
        }
    total = sum(k["ms"] for k in kernels.values())
    kinds: dict[str, dict] = {}
    for k in kernels.values():
        row = kinds.setdefault(k["kind"], {"ms": 0.0, "mmacs": 0.0, "kernels": 0})
        row["ms"] += k["ms"]
        row["mmacs"] += k["mmacs"]
        row["kernels"] += k["launches"]
    for row in kinds.values():
        row["share"] = row["ms"] / total
        row["gflops"] = 2 * row["mmacs"] / row["ms"] if row["mmacs"] else None
    return {
        "model": model,
        "host_cpu": str(target.attrs["mcpu"]),
        "kernels_ms": total,
        "kinds": kinds,
        "kernels": kernels,
    }


def kernel_kind(func) -> tuple[str, int]:
    """The kind of a legalized kernel and its multiply-adds (the reduction's iterations)."""
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(func)
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        block = sch.get(b)
        if not any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars):
            continue
        macs = math.prod(int(iv.dom.extent) for iv in block.iter_vars)
        reads = [[int(d) for d in r.source.shape] for r in block.reads]
        if len(reads) < 2:
            return "pooling / reduction", 0
        out = [int(d) for d in block.writes[0].source.shape]
        data, weight = reads[0], reads[-1]
        if len(weight) == 2:
            return "dense", macs
        if len(weight) != 4:
            return "other", macs
        grouped = not (weight[2] == data[1] and weight[3] == out[1])  # HWIO: one group
        kh = weight[2] if grouped else weight[0]  # grouped ones keep OIHW
        strided = out[2] < data[2] - kh + 1
        kind = "depthwise / grouped" if grouped else f"conv {kh}x{kh}"
        return kind + (" strided" if strided else ""), macs
    return "other", 0


def format_table(numbers: dict) -> str:
    lines = [f"{numbers['model']} on {numbers['host_cpu']}: kernels {numbers['kernels_ms']:.1f} ms"]
    lines.append(
        f"{'kind':26s} {'launches':>8s} {'ms':>8s} {'share':>6s} {'MMAC':>8s} {'GFLOP/s':>8s}"
    )
    for kind, row in sorted(numbers["kinds"].items(), key=lambda kv: -kv[1]["ms"]):
        gflops = f"{row['gflops']:8.1f}" if row["gflops"] else f"{'':8s}"
        lines.append(
            f"{kind:26s} {row['kernels']:8d} {row['ms']:8.2f} {100 * row['share']:5.1f}% "
            f"{row['mmacs']:8.1f} {gflops}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    run(
        __doc__,
        measure,
        format_table,
        options={"--model": {"default": "resnet50", "help": "a model of benchmarks.real_size"}},
    )
