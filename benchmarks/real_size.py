"""Inference at ImageNet size against ONNX Runtime (`python -m benchmarks.peers --real-size`):
per model, the median latency of one request (batch 1, numpy in, numpy out) through
- ONNX Runtime's `session.run` (CPU execution provider, ORT_ENABLE_ALL),
- plain TVM: the model compiled alone (`StandaloneModel`, default schedules),
- virtualized: all models packed in one library (a lossless plan, materialize mode),
  `MultitaskRuntime.run` once the model is switched in,
both TVM builds for this machine's CPU (`{"kind": "llvm", "mcpu": <host cpu>}`; ONNX Runtime
picks its kernels for it at run time too). Every system runs on the same number of threads:
once on 1 and once on all CPUs, each in a process of its own (TVM sizes its thread pool once,
from `TVM_NUM_THREADS`). Each round calls every system once, in a fresh seeded random order
(`tasks`, `vs_ort`; on all CPUs one system's threads may still spin when the next one starts,
as in a process serving several models); `tasks_alone`, `alone_vs_ort`: each system called
back to back, as a process serving one model would.

Models: the ONNX model-zoo graphs of the onnx wheel with seeded weights
(`examples.zoo_onnx`: SqueezeNet 1.0, ShuffleNet, ResNet-50; full run also DenseNet-121 and
Inception v1) and MobileNetV2 (`architectures.IMAGENET_MOBILENET_V2`, exported from torch);
each system reads the same ONNX graph. `gflops`: 2 x the convolutions' and dense layers'
multiply-adds per second; `peak_gflops`: vector lanes x 2 (an FMA) x 2 FMA units x clock x
CPUs, the clock as /proc/cpuinfo reads it (it may boost above it)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

QUICK_MODELS = ["squeezenet", "shufflenet", "resnet50", "mobilenet_v2"]
FULL_MODELS = [*QUICK_MODELS, "densenet121", "inception_v1"]
SYSTEMS = ["onnxruntime", "plain_tvm", "virtualized"]


def measure(quick: bool) -> dict:
    """Each thread count measured in a child process; the all-CPU run's numbers at the top."""
    counts = sorted({1, os.cpu_count() or 1})
    runs = {n: _in_child(quick, n) for n in counts}
    numbers = {**runs[counts[-1]], "threads": counts[-1]}
    numbers["one_thread"] = runs[1]
    numbers["peak_gflops"] = peak_gflops(counts[-1])
    numbers["peak_gflops_one_thread"] = peak_gflops(1)
    return numbers


def _in_child(quick: bool, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "numbers.json")
        code = (
            "import json, sys; from benchmarks.real_size import measure_threads; "
            "json.dump(measure_threads(sys.argv[1] == 'quick', int(sys.argv[2])), "
            "open(sys.argv[3], 'w'))"
        )
        env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
        argv = [sys.executable, "-c", code, "quick" if quick else "full", str(threads), out]
        subprocess.run(argv, env=env, check=True)
        with open(out) as f:
            return json.load(f)


def measure_threads(quick: bool, threads: int) -> dict:
    """The systems on `threads` threads (this process's TVM_NUM_THREADS must say the same)."""
    import tvm
    from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

    import tvm_weightvirt as wv
    from benchmarks.peers import onnx_session, seconds_of
    from tvm_weightvirt.progress import log, log_to_stderr

    if os.environ.get("TVM_NUM_THREADS") != str(threads):
        raise RuntimeError(f"run with TVM_NUM_THREADS={threads}")
    log_to_stderr(f"[{threads} thread(s)] ")
    host = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    names = QUICK_MODELS if quick else FULL_MODELS
    models = {name: onnx_model(name) for name in names}
    tasks = [wv.Task.from_onnx(models[n], name=n) for n in names]
    plan = wv.PagePlan.lossless(tasks)
    log.info(f"building {len(tasks)} models in one library for {host['mcpu']}")
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan), target=host))
    rng = np.random.default_rng(0)
    rounds = 10 if quick else 30
    numbers: dict = {"rounds": rounds, "host_cpu": host["mcpu"], "tasks": {}, "gflops": {}}
    numbers["max_abs_difference_to_ort"] = {}
    for task in tasks:
        log.info(f"{task.name}: compiling alone, timing {rounds} rounds on {threads} thread(s)")
        ((shape, dtype),) = task.input_types
        x = rng.normal(size=shape).astype(dtype)
        session = onnx_session(models[task.name].SerializeToString(), threads)
        feed = {session.get_inputs()[0].name: x}
        plain = StandaloneModel(task, target=host)

        def virtualized(name=task.name):
            if runtime.current != name:
                runtime.switch(name)  # (its weights through the caches, as a run's would be)
            return seconds_of(lambda: runtime.run(name, x))

        calls = {
            "onnxruntime": lambda s=session: seconds_of(lambda: s.run(None, feed)),
            "plain_tvm": lambda p=plain: seconds_of(lambda: p.run(x)),
            "virtualized": virtualized,
        }
        expected = session.run(None, feed)[0]
        numbers["max_abs_difference_to_ort"][task.name] = {
            "plain_tvm": float(np.abs(plain.run(x)[0] - expected).max()),
            "virtualized": float(np.abs(runtime.run(task.name, x)[0] - expected).max()),
        }
        times: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(rounds):
            for k in rng.permutation(len(calls)):
                label = SYSTEMS[k]
                times[label].append(calls[label]())
        alone = {label: [call() for _ in range(rounds)] for label, call in calls.items()}
        for key, seconds in (("tasks", times), ("tasks_alone", alone)):
            ms = {label: 1e3 * float(np.median(t)) for label, t in seconds.items()}
            numbers.setdefault(key, {})[task.name] = ms
        macs = multiply_adds(task)
        numbers["gflops"][task.name] = {
            label: 2 * macs / ms / 1e6 for label, ms in numbers["tasks"][task.name].items()
        }
    for key, tasks_key in (("vs_ort", "tasks"), ("alone_vs_ort", "tasks_alone")):
        numbers[key] = {
            system: _geomean_and_worst(
                [ms[system] / ms["onnxruntime"] for ms in numbers[tasks_key].values()]
            )
            for system in SYSTEMS[1:]
        }
    numbers["virtualized_vs_plain"] = _geomean_and_worst(
        [ms["virtualized"] / ms["plain_tvm"] for ms in numbers["tasks"].values()]
    )
    return numbers


def onnx_model(name: str):
    """The ONNX graph every system reads for `name` (see the module's docstring)."""
    import onnx
    import torch

    from tvm_weightvirt.apps import examples
    from tvm_weightvirt.apps.architectures import IMAGENET_MOBILENET_V2, MobileNetV2

    if name != "mobilenet_v2":
        return examples.zoo_onnx(name)
    torch.manual_seed(0)
    model = examples.seeded(MobileNetV2(**IMAGENET_MOBILENET_V2), 0).eval()
    f = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), f, dynamo=False)
    return onnx.load_from_string(f.getvalue())


def multiply_adds(task) -> int:
    """The multiply-adds of a task's convolutions (weights OI...) and matmuls."""
    from tvm_weightvirt.apps import examples

    total = 0
    for call in examples.op_calls(task):
        if call.op.name in ("relax.nn.conv1d", "relax.nn.conv2d"):
            weight = [int(d) for d in call.args[1].ty.shape.values]
            total += _elements(call) * int(np.prod(weight[1:]))
        elif call.op.name == "relax.matmul":
            total += _elements(call) * int(call.args[0].ty.shape.values[-1])
    return total


def _elements(call) -> int:
    return int(np.prod([int(d) for d in call.ty.shape.values]))


def peak_gflops(cpus: int) -> dict:
    """The machine's float32 peak (see the module's docstring) and what it is made of."""
    import tvm

    from tvm_weightvirt.compile.cpu_schedule import vector_lanes

    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    lanes = vector_lanes(host)
    with open("/proc/cpuinfo") as f:
        mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    ghz = max(mhz) / 1e3 if mhz else float("nan")
    return {
        "gflops": lanes * 2 * 2 * ghz * cpus,
        "lanes": lanes,
        "fma_units": 2,
        "ghz": ghz,
        "cpus": cpus,
    }


def _geomean_and_worst(ratios: list[float]) -> dict:
    return {"geomean": float(np.exp(np.mean(np.log(ratios)))), "worst": float(max(ratios))}


def format_table(numbers: dict) -> str:
    lines = []
    for label, run in (("all CPUs", numbers), ("1 thread", numbers["one_thread"])):
        peak = numbers["peak_gflops" if run is numbers else "peak_gflops_one_thread"]["gflops"]
        lines.append(f"{label} (median ms; GFLOP/s of a {peak:.0f} GFLOP/s peak)")
        lines.append(f"{'model':14s}" + "".join(f"{s:>22s}" for s in SYSTEMS))
        for name, ms in run["tasks"].items():
            gf = run["gflops"][name]
            lines.append(
                f"{name:14s}" + "".join(f"{ms[s]:12.1f} ({gf[s]:5.1f})".rjust(22) for s in SYSTEMS)
            )
        for key, label in (("vs_ort", "vs ORT"), ("alone_vs_ort", "alone vs ORT")):
            for stat in ("geomean", "worst"):
                lines.append(
                    f"{label + ' ' + stat:22s}{'':>14s}"
                    + "".join(f"{run[key][s][stat]:21.2f}x" for s in SYSTEMS[1:])
                )
        ratio = run["virtualized_vs_plain"]
        lines.append(
            f"virtualized / plain: {ratio['geomean']:.3f} geomean, {ratio['worst']:.3f} worst"
        )
    return "\n".join(lines)
