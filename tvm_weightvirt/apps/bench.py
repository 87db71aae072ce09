"""The switch benchmark: packed (materialize, fused) vs. reload-from-storage vs. all-resident,
over one seeded random request sequence, all in one process: on the CPU with the suite, or on a
GPU with the small nets of the GPU check's artifacts (loaded with TVM's runtime alone)."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import tvm

from ..progress import log, steps


def _median_p99(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "p99": float(np.percentile(values, 99))}


class _Memcpy:
    """Copies a task's page bytes once between two buffers on the device (64-byte aligned
    numpy arrays on the CPU), finished before it returns: the physical limit of a materialize
    switch, timed in the same loop as the systems."""

    def __init__(self, max_bytes: int, device: tvm.runtime.Device) -> None:
        from tvm_weightvirt.runtime.io import aligned_zeros, on_cpu

        self.device, self.on_cpu, n = device, on_cpu(device), max_bytes // 4
        if self.on_cpu:
            self.src, self.dst = aligned_zeros((n,)), aligned_zeros((n,))
        else:
            self.src, self.dst = (tvm.runtime.empty((n,), "float32", device) for _ in "ab")
        self._views = {}

    def __call__(self, n_bytes: int) -> float:
        if self.on_cpu:
            a, b = self.src[: n_bytes // 4], self.dst[: n_bytes // 4]
            start = time.perf_counter()
            np.copyto(b, a)
            return time.perf_counter() - start
        from tvm_weightvirt.runtime.device_memory import offset_view

        if n_bytes not in self._views:
            self._views[n_bytes] = [
                offset_view(t, 0, (n_bytes // 4,)) for t in (self.src, self.dst)
            ]
        a, b = self._views[n_bytes]
        start = time.perf_counter()
        b.copyfrom(a)
        self.device.sync()
        return time.perf_counter() - start


def switch_benchmark(quick: bool = False, seed: int = 0) -> dict:
    """On the CPU: the suite's five tasks on NWV's pool size with matched pages; `mapped`: the
    same tasks in kernel layout on pages of one OS page, mapped (`MultitaskRuntime(mapped=True)`)."""
    from tvm_weightvirt.runtime import MultitaskRuntime, ReloadModels, ResidentModels
    from tvm_weightvirt.runtime.page_mapping import OS_PAGE_BYTES

    from ..algorithms.optimize import OptimizeConfig
    from ..algorithms.pipeline import PackConfig
    from ..compile.compiler import build, lower
    from ..frontend.packing import pack
    from . import suite

    tasks = suite.load_suite(suite.FIVE_TASKS)
    # The packed plan: NWV's pool size, matched pages (retraining does not change switch cost).
    plan = pack(*suite.packable(tasks), PackConfig(optimize=OptimizeConfig(rounds=0))).plan
    graphs = [t.task for t in tasks]
    kernel_graphs = [g.in_kernel_layout() for g in graphs]
    mapped_plan = pack(
        kernel_graphs,
        {t.name: t.data for t in tasks},
        PackConfig(page_size=OS_PAGE_BYTES // 4, optimize=OptimizeConfig(rounds=0)),
    ).plan
    inputs = {t.name: t.example_input().numpy() for t in tasks}
    storage = tempfile.mkdtemp(prefix="wvirt-reload-")
    log.info("switch benchmark: building the packed (3 modes) and separate systems")
    systems = {
        "materialize": MultitaskRuntime(plan, build(lower(graphs, plan, "materialize"))),
        "fused": MultitaskRuntime(plan, build(lower(graphs, plan, "fused"))),
        "mapped": MultitaskRuntime(
            mapped_plan, build(lower(kernel_graphs, mapped_plan)), mapped=True
        ),
        "reload": ReloadModels.compile(graphs, storage, cold=True),
        "reload_warm": ReloadModels.compile(graphs, storage, cold=False),
        "resident": ResidentModels.compile(graphs),
    }
    return measure_switches(systems, plan, inputs, tvm.cpu(), 100 if quick else 400, seed)


def gpu_switch_benchmark(artifacts: str, quick: bool = False, seed: int = 0) -> dict:
    """On the GPU: the three small nets of `tests/gpu/gpu_artifacts.py` (lossless plan), each
    system loaded from the artifacts folder `artifacts`."""
    from tvm_weightvirt.runtime import MultitaskRuntime, ReloadModels, ResidentModels

    from ..compile.library import Library
    from ..frontend.artifact import load_wvpack

    nets = os.path.join(artifacts, "nets")
    plan = load_wvpack(os.path.join(nets, "plan.wvpack"), graphs=False).plan
    reference = np.load(os.path.join(nets, "reference.npz"))
    inputs = {name: reference[f"{name}.input"] for name in plan.tasks}
    device = tvm.cuda()
    packed = {m: Library.load(os.path.join(nets, m)) for m in ("materialize", "fused")}
    files = {
        n: tuple(os.path.join(nets, "plain", f"{n}.{ext}") for ext in ("so", "safetensors"))
        for n in plan.tasks
    }
    input_types = {n: packed["materialize"].tasks[n].inputs for n in plan.tasks}
    systems = {
        **{m: MultitaskRuntime(plan, library, device) for m, library in packed.items()},
        "reload": ReloadModels(files, input_types, device, cold=True),
        "reload_warm": ReloadModels(files, input_types, device, cold=False),
        "resident": ResidentModels.load(files, input_types, device),
    }
    return measure_switches(systems, plan, inputs, device, 100 if quick else 400, seed)


def measure_switches(systems: dict, plan, inputs: dict, device, n_requests: int, seed: int) -> dict:
    """Every system serves one seeded random sequence of `n_requests`, request by request in
    turn (machine noise hits all alike); medians and p99 of switch, inference and end-to-end
    time, and ratios to a device memcpy of the task's page bytes and to the resident models."""
    rng = np.random.default_rng(seed)
    sequence = rng.choice(list(inputs), n_requests).tolist()
    task_bytes = {n: t.layout.n_pages * plan.page_size * 4 for n, t in plan.tasks.items()}
    memcpy = _Memcpy(max(task_bytes.values()), device)
    for system in systems.values():  # warm-up: every task once
        for name in inputs:
            system.run(name, inputs[name])
    times = {label: {"switch": [], "infer": [], "e2e": [], "per_memcpy": []} for label in systems}
    by_task = {
        label: {n: {"switch": [], "infer": [], "per_memcpy": []} for n in inputs}
        for label in systems
    }
    memcpy_us = []
    for i, name in steps(list(enumerate(sequence)), "switch benchmark requests"):
        switching = i == 0 or sequence[i - 1] != name
        copy_seconds = memcpy(task_bytes[name])
        if switching:
            memcpy_us.append(1e6 * copy_seconds)
        for label, system in systems.items():
            start = time.perf_counter()
            if switching:
                system.switch(name)
                if not memcpy.on_cpu:
                    device.sync()  # a GPU switch is done when its kernels are
            switched = time.perf_counter()
            system.run(name, inputs[name])  # outputs on the host: finished on any device
            done = time.perf_counter()
            for t in (times[label], by_task[label][name]):
                if switching:
                    t["switch"].append(1e6 * (switched - start))
                    t["per_memcpy"].append((switched - start) / copy_seconds)
                t["infer"].append(1e6 * (done - switched))
            times[label]["e2e"].append(1e6 * (done - start))
    results = {
        label: {
            "switch_us": _median_p99(t["switch"]),
            "infer_us": _median_p99(t["infer"]),
            "e2e_us": _median_p99(t["e2e"]),
            "switches": len(t["switch"]),
            "switch_vs_memcpy": float(np.median(t["per_memcpy"])),
            "resident_bytes": int(systems[label].resident_bytes),
        }
        for label, t in times.items()
    }
    per_task = {
        label: {
            name: {
                "switch_us": float(np.median(t["switch"])) if t["switch"] else float("nan"),
                "infer_us": float(np.median(t["infer"])),
                "switch_vs_memcpy": float(np.median(t["per_memcpy"]))
                if t["per_memcpy"]
                else float("nan"),
            }
            for name, t in tasks.items()
        }
        for label, tasks in by_task.items()
    }
    switch = {k: v["switch_us"]["median"] for k, v in results.items()}
    infer = {k: v["infer_us"]["median"] for k, v in results.items()}
    numbers = {
        "device": str(device),
        "requests": n_requests,
        "tasks": list(inputs),
        "systems": results,
        "per_task": per_task,
        "memcpy_us": float(np.median(memcpy_us)),
        "switch_vs_memcpy": results["materialize"]["switch_vs_memcpy"],
        "resident_bytes": {
            {"materialize": "packed", "fused": "packed_fused", "mapped": "packed_mapped"}.get(
                label, label
            ): r["resident_bytes"]
            for label, r in results.items()
            if label != "reload_warm"
        },
    }
    for label, system in systems.items():  # named as the switch benchmark names them
        if label in ("materialize", "fused", "mapped"):
            numbers[f"switch_us_{label}"] = switch[label]
            numbers[f"infer_ratio_{label}"] = infer[label] / infer["resident"]
            c = system.counters  # the warm-up's switches included
            moved = c.bytes_gathered + c.bytes_transformed
            numbers[f"weight_bytes_per_switch_{label}"] = moved / c.switches
        elif label.startswith("reload"):
            numbers[f"switch_ratio_{label}"] = switch[label] / switch["materialize"]
    return numbers


def format_switch_table(numbers: dict) -> str:
    lines = [
        f"{numbers['requests']} requests over {', '.join(numbers['tasks'])} "
        f"(batch 1, {numbers['device']})",
        f"{'system':12s} {'switch med':>11s} {'p99':>9s} {'infer med':>10s} {'p99':>9s} "
        f"{'e2e med':>9s} {'p99':>9s} {'weights B':>10s}",
    ]
    for label, r in numbers["systems"].items():
        lines.append(
            f"{label:12s} {r['switch_us']['median']:9.1f}us {r['switch_us']['p99']:7.1f}us "
            f"{r['infer_us']['median']:8.1f}us {r['infer_us']['p99']:7.1f}us "
            f"{r['e2e_us']['median']:7.1f}us {r['e2e_us']['p99']:7.1f}us {r['resident_bytes']:10d}"
        )
    lines.append(
        f"materialize switch / memcpy of the same bytes: {numbers['switch_vs_memcpy']:.2f} "
        f"(memcpy {numbers['memcpy_us']:.1f} us); reload / switch: cold "
        f"{numbers['switch_ratio_reload']:.0f}x, warm {numbers['switch_ratio_reload_warm']:.0f}x; "
        "inference vs plain: "
        + ", ".join(
            f"{mode} {numbers[f'infer_ratio_{mode}']:.3f}x"
            for mode in ("materialize", "fused", "mapped")
            if f"infer_ratio_{mode}" in numbers
        )
    )
    lines.append(
        "weight bytes moved per switch (gathered + transformed): "
        + ", ".join(
            f"{mode} {numbers[f'weight_bytes_per_switch_{mode}']:.0f}"
            for mode in ("materialize", "fused", "mapped")
            if f"weight_bytes_per_switch_{mode}" in numbers
        )
    )
    return "\n".join(lines)
