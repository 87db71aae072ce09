"""Tutorial 4: how fast a packed model answers one request, against ONNX Runtime, and tuning.

Run: python tutorials/04_inference_speed.py [--tune TRIALS]

What a CPU build does for speed, with no option to set:
- weight-only ops (the transpose of every dense weight, the layout change of every conv weight
  to output channels last) run once at the context switch, not in every request;
- dense and conv kernels get a default schedule: vectors of output channels accumulated in
  registers, bias and activation fused in (`tvm_weightvirt/compile/cpu_schedule.py`).
`wvirt tune PACK` (here: `--tune TRIALS`) tunes the kernels into the target's default database
once; later builds apply it, and keep a kernel's default schedule unless a tuned one is 10 %
faster. `python -m benchmarks.peers` is the full comparison (torch, ONNX Runtime, plain TVM).
"""

import argparse
import io
import time

import numpy as np
import torch
from tvm_weightvirt.runtime import MultitaskRuntime

import tvm_weightvirt as wv
from tvm_weightvirt.abi import weight_transform_function
from tvm_weightvirt.apps import examples

parser = argparse.ArgumentParser()
parser.add_argument("--tune", type=int, default=0, help="MetaSchedule trials per kernel")
args = parser.parse_args()


def median_us(call, n: int = 300) -> float:
    call()  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


# 1. Two models packed (lossless) and built for this CPU.
models = {kind: examples.torch_model(kind, seed) for seed, kind in enumerate(["cnn2d", "cnn1d"])}
tasks = [wv.Task.from_torch(m, (x,), name=kind) for kind, (m, x) in models.items()]
plan = wv.PagePlan.lossless(tasks)
mod = wv.lower(tasks, plan)
print("switch-time functions:", [weight_transform_function(f"task_{t.name}") for t in tasks])
runtime = MultitaskRuntime(plan, wv.build(mod))

# 2. One request at a time, numpy in, numpy out (torch tensors are accepted too).
for kind, (model, x) in models.items():
    out = runtime.run(kind, x.numpy())[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    line = f"{kind}: packed {median_us(lambda: runtime.run(kind, x.numpy())):.1f} us"
    try:
        import onnxruntime as ort

        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False)
        session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        line += f", ONNX Runtime {median_us(lambda: session.run(None, {name: x.numpy()})):.1f} us"
    except ImportError:
        line += " (pip install -e '.[bench]' to time ONNX Runtime beside it)"
    print(line)

# 3. Tuning: into the target's default database (what `wvirt tune` does), then applied.
if args.tune:
    from tvm_weightvirt.compile.tuning import default_database_folder

    database = default_database_folder("llvm")
    tuned = wv.build(mod, tuning=wv.TuningOptions(database, args.tune))
    t = tuned.tuning
    print(
        f"tuned into {database}: {t['scheduled']} kernels run a tuned schedule, "
        f"{t['kept_default']} kept the default one"
    )
    tuned_runtime = MultitaskRuntime(plan, tuned)
    for kind, (_, x) in models.items():
        print(f"{kind}: tuned {median_us(lambda: tuned_runtime.run(kind, x.numpy())):.1f} us")
