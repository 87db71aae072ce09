"""The coverage matrix: each architecture of `architectures.py`, through the torch path and an
ONNX export (opset 17), checked in four columns:

- intake: a Task (an error here is a clear `IntakeError`, never a raw traceback);
- lossless: the llvm build, and the torch twin at batch 1 and 3, equal the torch model within
  `TOLERANCE` (relative to the output's largest magnitude);
- sharing: two instances (seeds 0 and 1) packed onto one pool of half the larger one's pages
  (pages shared across and within the tasks), retrained to regress their separate models'
  outputs on random inputs (a learnable task whose validation RMSE moves with every step):
  pool and retraining objectives finite, at least one retraining turn kept, the build computes
  what the twin computes on the packed weights;
- cortex_m: the packed pair as a Cortex-M4 project, on QEMU, equals the llvm build.

`check(name, path)` returns one row: column -> "ok", "skipped: why" or the error's message.
"""

from __future__ import annotations

import io
import math
import tempfile

import numpy as np
import torch

from .architectures import ARCHITECTURES, architecture

PATHS = ("torch", "onnx")
COLUMNS = ("intake", "lossless", "sharing", "cortex_m")
TOLERANCE = 1e-5
PAGE_SIZE = 64
OK = "ok"


def check(name: str, path: str, columns: tuple[str, ...] = COLUMNS) -> dict[str, str]:
    """The row of architecture `name` through `path` ("torch" or "onnx"): each column of
    `columns` "ok", "skipped: ..." or the message of what failed (a later column is skipped
    once one fails)."""
    row: dict[str, str] = {}
    state: dict = {}
    for column in COLUMNS:
        if column not in columns:
            continue
        failed = [c for c, v in row.items() if v != OK]
        if failed:
            row[column] = f"skipped: {failed[0]} failed"
            continue
        try:
            row[column] = _CHECKS[column](name, path, state)
        except Exception as err:  # the cell records what a user would read
            row[column] = f"{type(err).__name__}: {_first_line(err)}"
    return row


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def _inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape[1:])).astype(np.float32)


def task_of(name: str, path: str, seed: int = 0, task_name: str | None = None):
    """The Task of architecture `name` (seeded) through `path`, and its torch model."""
    from ..frontend.task import Task

    model, shape = architecture(name, seed)
    x = torch.from_numpy(_inputs(shape, 1, 100))
    task_name = task_name or name
    if path == "torch":
        return Task.from_torch(model, (x,), task_name), model
    if path != "onnx":
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False)
    return Task.from_onnx(onnx.load_from_string(buffer.getvalue()), task_name), model


def _intake(name: str, path: str, state: dict) -> str:
    state["task"], state["model"] = task_of(name, path)
    return OK


def _relative(out: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(out - expected).max() / max(np.abs(expected).max(), 1e-30))


def _lossless(name: str, path: str, state: dict) -> str:
    from ..frontend.twin import TorchTwin
    from ..runtime import StandaloneModel

    task, model = state["task"], state["model"]
    shape = ARCHITECTURES[name][1]
    x = _inputs(shape, 3, 1)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        twin = TorchTwin(task)
        errors = {
            "llvm build": _relative(StandaloneModel(task).run(x[:1])[0], expected[:1]),
            "twin at batch 1": _relative(twin(torch.from_numpy(x[:1])).numpy(), expected[:1]),
            "twin at batch 3": _relative(twin(torch.from_numpy(x)).numpy(), expected),
        }
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
    if bad:
        return "; ".join(f"{k} differs from torch by {v:.1e} (relative)" for k, v in bad.items())
    return OK


def _sharing(name: str, path: str, state: dict) -> str:
    import tvm_weightvirt as wv

    from ..algorithms.optimize import OptimizeConfig
    from ..algorithms.pipeline import PackConfig
    from ..frontend.twin import TorchTwin
    from ..runtime import MultitaskRuntime

    pair = [task_of(name, path, seed, f"m{seed}") for seed in (0, 1)]
    tasks = [t for t, _ in pair]
    shape = ARCHITECTURES[name][1]
    data = {}
    for i, (t, model) in enumerate(pair):
        splits = []
        for k, n in enumerate((48, 16, 16)):
            x = _inputs(shape, n, 10 * i + k)
            with torch.no_grad():
                splits.append((x, model(torch.from_numpy(x)).numpy()))
        data[t.name] = wv.TaskData(*splits, objective="regression")
    pages = max(wv.PagePlan.lossless([t], page_size=PAGE_SIZE).n_pool_pages for t in tasks)
    config = PackConfig(
        page_size=PAGE_SIZE,
        pool_pages=max(1, pages // 2),  # half a task: sharing costs something to retrain
        share_within_task=True,
        fisher_samples=16,
        optimize=OptimizeConfig(rounds=1, iterations=40, batch_size=16, eval_every=5),
    )
    result = wv.pack(tasks, data, config)
    plan, log = result.plan, result.report["optimize_log"]
    if not np.isfinite(plan.pool).all():
        return "the packed pool holds NaN or inf"
    objectives = [turn[k] for turn in log for k in ("objective_before", "objective_after")]
    if not all(math.isfinite(v) for v in objectives):
        return f"retraining objectives not finite: {objectives}"
    if not any(turn["kept"] for turn in log):
        return f"no retraining turn kept of {len(log)}"
    runtime = MultitaskRuntime(plan, wv.build(wv.lower(tasks, plan)))
    state["pair"], state["runtime"] = tasks, runtime
    state["requests"] = [(t.name, data[t.name].test[0][:1]) for t in tasks]
    for task, (_, x) in zip(tasks, state["requests"]):
        weights = {k: torch.from_numpy(v) for k, v in plan.read(task.name).items()}
        with torch.no_grad():
            expected = torch.func.functional_call(TorchTwin(task), weights, (torch.from_numpy(x),))
        err = _relative(runtime.run(task.name, x)[0], expected.numpy())
        if not err <= TOLERANCE:
            return f"task {task.name}: the build differs from the twin by {err:.1e} (relative)"
    state["plan"] = plan
    return OK


def _cortex_m(name: str, path: str, state: dict) -> str:
    from ..targets import mcu

    missing = mcu.missing_tools()
    if missing:
        return f"skipped: no {missing} (`make arm-toolchain`)"
    tasks, plan, runtime = state["pair"], state["plan"], state["runtime"]
    requests = state["requests"] + state["requests"][:1]  # A -> B -> A
    with tempfile.TemporaryDirectory() as folder:
        mcu.generate_project(tasks, plan, folder, packed=True)
        mcu.write_requests(folder, [(n, [x]) for n, x in requests])
        run = mcu.run_project(folder)
    for (task, x), outputs in zip(requests, run.outputs, strict=True):
        err = _relative(outputs[0], runtime.run(task, x)[0])
        if not err <= TOLERANCE:
            return f"task {task}: QEMU differs from the llvm build by {err:.1e} (relative)"
    return OK


_CHECKS = {"intake": _intake, "lossless": _lossless, "sharing": _sharing, "cortex_m": _cortex_m}
