"""End-to-end demo: five models (torch and ONNX) merged into one TVM program over a page pool."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import onnx

from . import examples
from .artifact import load_wvpack, save_wvpack
from .compiler import MODES, build, lower
from .plan import PagePlan
from .task import Task


def run_demo(page_size: int = 100, out_dir: str | None = None) -> dict:
    """Take in the example models, pack them losslessly, save and reload the artifact, build
    both execution modes for llvm and check every task against the model compiled alone.
    Returns the numbers it prints."""
    from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

    out_dir = out_dir or tempfile.mkdtemp(prefix="wvirt-demo-")
    os.makedirs(out_dir, exist_ok=True)
    # Step 1. Intake: torch modules through torch.export, ONNX graphs from files.
    tasks, inputs = [], {}
    for seed, kind in enumerate(examples.TORCH_MODELS):
        model, x = examples.torch_model(kind, seed)
        tasks.append(Task.from_torch(model, (x,), name=kind))
        inputs[kind] = x.numpy()
    for name, make in [("resnet", examples.onnx_resnet_block),
                       ("inception", examples.onnx_inception_block)]:
        model, x = make()
        path = os.path.join(out_dir, f"{name}.onnx")
        onnx.save(model, path)
        tasks.append(Task.from_onnx(path, name=name))
        inputs[name] = x
    for t in tasks:
        print(f"  intake {t.name:10s} {len(t.weights):3d} weight tensors, {t.n_weights:6d} weights")
    # Step 2. Plan and artifact.
    plan = PagePlan.lossless(tasks, page_size=page_size)
    pack_path = os.path.join(out_dir, "suite.wvpack")
    pack_bytes = save_wvpack(pack_path, plan, tasks)
    pack = load_wvpack(pack_path)
    print(plan.summary())
    print(f"  artifact {pack_path}: {pack_bytes} B (pool {plan.pool_bytes} B)")
    # Step 3. Reference: each model compiled alone by TVM.
    reference = {t.name: StandaloneModel(t).run(inputs[t.name]) for t in tasks}
    report = {"artifact_bytes": pack_bytes, "pool_bytes": plan.pool_bytes, "modes": {}}
    # Step 4. Lower, build and run the merged program from the reloaded artifact.
    for mode in MODES:
        library = build(lower(pack.tasks, pack.plan, mode=mode), target="llvm")
        runtime = MultitaskRuntime(pack.plan, library)
        errors, seconds = {}, []
        names = [t.name for t in tasks]
        for name in names + names[::-1]:
            start = time.perf_counter()
            out = runtime.run(name, inputs[name])
            seconds.append(time.perf_counter() - start)
            err = max(float(np.abs(g - e).max()) for g, e in zip(out, reference[name]))
            errors[name] = max(err, errors.get(name, 0.0))
        report["modes"][mode] = {
            "compile_seconds": library.compile_seconds,
            "max_abs_err": errors,
            "median_request_ms": 1e3 * float(np.median(seconds)),
        }
        print(f"  {mode:11s} compiled in {library.compile_seconds:.1f} s; max |out - alone| "
              + ", ".join(f"{n} {e:.1e}" for n, e in errors.items())
              + f"; median request (with switch) {1e3 * np.median(seconds):.2f} ms")
    return report
