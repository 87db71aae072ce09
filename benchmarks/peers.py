"""Inference against what a user would run instead: per suite task, the median latency of one
request (batch 1, numpy in, numpy out) through each system's ordinary call, all systems
interleaved in one process:
- torch eager (`model(x)` under `torch.inference_mode`),
- ONNX Runtime's `session.run` (CPU execution provider, ORT_ENABLE_ALL, the model exported with
  `torch.onnx.export`; install with `pip install -e '.[bench]'`), with its default threads and
  with one intra-op thread (faster at batch 1 on small models, and it does not depend on
  whether its worker threads are still spinning from the previous call),
- plain TVM: the task compiled alone (`StandaloneModel.run`), with default schedules and, when
  a tuning database exists (`$WVIRT_TUNING_DB` or the default folder, see `wvirt tune`), tuned,
- virtualized: all tasks packed in one library, `MultitaskRuntime.run` in materialize and
  fused mode (each task's own weights, a lossless plan: latency does not depend on which pages
  are shared), built for TVM's generic `llvm` target (x86-64 baseline: SSE2) and, in
  materialize mode, for this machine's CPU too (`{"kind": "llvm", "mcpu": <host cpu>}`).
Each round calls every system once, in a fresh seeded random order, so no system always runs
right after a particular other one (whose weights went through the caches, or whose threads
still spin). `vs_ort` compares with ONNX Runtime's defaults, `vs_best_ort` with the faster of
its two configurations per task. `tasks_alone` and `alone_vs_best_ort`: each system called
back to back, as a process serving one model would (ONNX Runtime's threads keep spinning)."""

from __future__ import annotations

import io
import time

import numpy as np

from benchmarks._common import run

ORT_SYSTEMS = {"onnxruntime": 0, "onnxruntime_1_thread": 1}  # label: intra-op threads
ORT_INSTALL = "onnxruntime is a benchmark dependency: pip install -e '.[bench]'"


def ort_session(model, example, threads: int = 0):
    """`model` exported to ONNX and loaded in an ONNX Runtime CPU session (`threads` intra-op
    threads; 0: ONNX Runtime's default, one per physical core)."""
    import torch

    f = io.BytesIO()
    torch.onnx.export(model, (example,), f, dynamo=False)
    return onnx_session(f.getvalue(), threads)


def onnx_session(onnx_bytes: bytes, threads: int = 0):
    """An ONNX Runtime CPU session (ORT_ENABLE_ALL) of a serialized ONNX graph."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise SystemExit(ORT_INSTALL) from err
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the zoo graphs' unused initializers are not news
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def measure(quick: bool) -> dict:
    import torch
    import tvm
    from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

    import tvm_weightvirt as wv
    from tvm_weightvirt.apps import suite
    from tvm_weightvirt.compile.tuning import default_database

    tasks = suite.load_suite(suite.FIVE_TASKS)
    graphs = [t.task for t in tasks]
    plan = wv.PagePlan.lossless(graphs)
    runtimes = {
        f"virtualized_{mode}": MultitaskRuntime(plan, wv.build(wv.lower(graphs, plan, mode)))
        for mode in wv.MODES
    }
    host = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    runtimes["virtualized_materialize_host_cpu"] = MultitaskRuntime(
        plan, wv.build(wv.lower(graphs, plan), target=host)
    )
    database = default_database("llvm")
    rounds = 100 if quick else 1000
    rng = np.random.default_rng(0)
    numbers: dict = {
        "rounds": rounds,
        "tuning_database": database,
        "host_cpu": host["mcpu"],
        "tasks": {},
        "tasks_alone": {},
    }
    for t in tasks:
        x = t.example_input().numpy()
        sessions = {
            label: ort_session(t.model.eval(), torch.from_numpy(x), threads)
            for label, threads in ORT_SYSTEMS.items()
        }
        ort_input = sessions["onnxruntime"].get_inputs()[0].name
        plain = StandaloneModel(t.task)
        calls = {
            "torch_eager": lambda m=t.model, tx=torch.from_numpy(x): m(tx),
            **{label: (lambda s=s: s.run(None, {ort_input: x})) for label, s in sessions.items()},
            "plain_tvm": lambda p=plain: p.run(x),
            **{label: (lambda r=r, n=t.name: r.run(n, x)) for label, r in runtimes.items()},
        }
        if database:
            tuned = StandaloneModel(t.task, tuning_db=database)
            calls["plain_tvm_tuned"] = lambda p=tuned: p.run(x)
        expected = t.model(torch.from_numpy(x)).detach().numpy()
        times: dict[str, list[float]] = {label: [] for label in calls}
        with torch.inference_mode():
            for label, call in calls.items():  # warm-up; every system computes the same
                out = call()
                out = out.numpy() if label == "torch_eager" else out[0]
                np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4, err_msg=label)
            order = list(calls.items())
            for _ in range(rounds):
                for k in rng.permutation(len(order)):
                    label, call = order[k]
                    times[label].append(seconds_of(call))
            alone = {
                label: [seconds_of(call) for _ in range(rounds)] for label, call in calls.items()
            }
        for key, seconds in (("tasks", times), ("tasks_alone", alone)):
            numbers[key][t.name] = {k: 1e6 * float(np.median(v)) for k, v in seconds.items()}
    systems = [s for s in next(iter(numbers["tasks"].values())) if s not in ORT_SYSTEMS]
    for key, tasks, ort_us in [
        ("vs_ort", "tasks", lambda us: us["onnxruntime"]),
        ("vs_best_ort", "tasks", _best_ort),
        ("alone_vs_best_ort", "tasks_alone", _best_ort),
    ]:
        numbers[key] = {}
        for system in systems:
            ratios = [us[system] / ort_us(us) for us in numbers[tasks].values()]
            numbers[key][system] = {
                "geomean": float(np.exp(np.mean(np.log(ratios)))),
                "worst": float(max(ratios)),
            }
    numbers["virtualized_vs_plain"] = {
        name: us["virtualized_materialize"] / us["plain_tvm"]
        for name, us in numbers["tasks"].items()
    }
    return numbers


def seconds_of(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _best_ort(us: dict) -> float:
    return min(us[s] for s in ORT_SYSTEMS)


def format_table(numbers: dict) -> str:
    systems = list(next(iter(numbers["tasks"].values())))
    width = max(map(len, systems)) + 1
    lines = [f"{'task':26s}" + "".join(f"{s:>{width}s}" for s in systems) + "   (median us)"]
    for name, us in numbers["tasks"].items():
        lines.append(f"{name:26s}" + "".join(f"{us[s]:{width}.1f}" for s in systems))
    for key in ("vs_ort", "vs_best_ort", "alone_vs_best_ort"):
        for stat in ("geomean", "worst"):
            ratios = numbers[key]
            lines.append(
                f"{key + ' ' + stat:26s}"
                + "".join(
                    f"{ratios[s][stat]:{width - 1}.2f}x" if s in ratios else f"{'':>{width}s}"
                    for s in systems
                )
            )
    return "\n".join(lines)


def measure_or_real_size(quick: bool, real_size: bool) -> dict:
    if real_size:
        from benchmarks import real_size as at_real_size

        return at_real_size.measure(quick)
    return measure(quick)


def table(numbers: dict) -> str:
    if "one_thread" in numbers:
        from benchmarks import real_size as at_real_size

        return at_real_size.format_table(numbers)
    return format_table(numbers)


if __name__ == "__main__":
    real_size_help = "ImageNet-size models instead of the suite (benchmarks/real_size.py)"
    run(
        __doc__,
        measure_or_real_size,
        table,
        options={"--real-size": {"action": "store_true", "help": real_size_help}},
    )
