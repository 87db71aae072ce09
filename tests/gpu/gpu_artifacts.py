"""What the GPU tests and the GPU switch benchmark run, built ahead of time where TVM's compiler
and nvcc are (the GPU machine then needs only TVM's runtime, as a Jetson does):

    python tests/gpu/gpu_artifacts.py DIR [--arch sm_87,sm_90]

DIR/<backend>/ holds an echo plan (`plan.wvpack`) and its library built for cuda (`cuda/`), one
per backend of `page_plans.BACKENDS`; DIR/nets/ holds three small nets on a lossless plan, their
cuda libraries in both modes, each net compiled alone (`plain/`, the baseline) and the CPU's
outputs on seeded inputs (`reference.npz`)."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from page_plans import BACKENDS, SHAPES, echo_task  # noqa: E402

import tvm_weightvirt as wv  # noqa: E402

ARCHS = ("sm_87", "sm_90")  # Jetson Orin and Hopper (the H100/H200 a GPU check may get)
NETS = "nets"


def backend_folder(backend: str) -> str:
    """A folder name for a backend of BACKENDS ("tir gather, exclusive pages" ->
    "tir_gather_exclusive_pages")."""
    return "_".join(backend.replace(",", "").replace("(", "").replace(")", "").split())


def prepare(directory: str, archs: tuple[str, ...] = ARCHS) -> str:
    from tvm_weightvirt.runtime import MultitaskRuntime
    from tvm_weightvirt.runtime.standalone import save_alone

    from tvm_weightvirt.apps import examples

    target = {"kind": "cuda", "arch": archs[0]}
    for backend, (mode, page_size, make_plan) in BACKENDS.items():
        folder = os.path.join(directory, backend_folder(backend))
        tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
        plan = make_plan(tasks, page_size)
        os.makedirs(folder, exist_ok=True)
        wv.save_wvpack(os.path.join(folder, "plan.wvpack"), plan)
        wv.build(wv.lower(tasks, plan, mode), target, archs=archs).export(
            os.path.join(folder, "cuda")
        )
    folder = os.path.join(directory, NETS)
    models = {k: examples.torch_model(k, seed) for seed, k in enumerate(examples.TORCH_MODELS)}
    tasks = [wv.Task.from_torch(m, (x,), name=k) for k, (m, x) in models.items()]
    plan = wv.PagePlan.lossless(tasks)
    os.makedirs(os.path.join(folder, "plain"), exist_ok=True)
    wv.save_wvpack(os.path.join(folder, "plan.wvpack"), plan)
    for mode in wv.MODES:
        library = wv.build(wv.lower(tasks, plan, mode), target, archs=archs)
        library.export(os.path.join(folder, mode))
    cpu = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)))
    reference = {}
    for task in tasks:
        x = models[task.name][1].numpy()
        reference[f"{task.name}.input"] = x
        for k, out in enumerate(cpu.run(task.name, x)):
            reference[f"{task.name}.output{k}"] = np.array(out)
        save_alone(task, os.path.join(folder, "plain"), target, archs)
    np.savez(os.path.join(folder, "reference.npz"), **reference)
    return directory


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--arch", default=",".join(ARCHS), help="comma-separated, lowest first")
    args = parser.parse_args()
    print(prepare(args.directory, tuple(args.arch.split(","))))
