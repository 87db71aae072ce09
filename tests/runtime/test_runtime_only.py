"""The device side needs TVM's runtime alone: `wvirt run --library` on a built folder, in a
process where TVM's compiler is not loaded (`TVM_USE_RUNTIME_LIB=1`, as on a Jetson with a
runtime-only TVM), loads the library and the plan (not the graphs) and serves every switch,
exclusive pages and their prefetch included."""

import os
import subprocess
import sys

from page_plans import SHAPES, echo_task, exclusive_plan

import tvm_weightvirt as wv


def test_wvirt_run_needs_only_tvms_runtime(tmp_path):
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = exclusive_plan(tasks, 100)
    wv.save_wvpack(tmp_path / "plan.wvpack", plan, tasks)
    wv.build(wv.lower(tasks, plan)).export(str(tmp_path / "build"))
    run = [sys.executable, "-m", "tvm_weightvirt.apps.cli", "run", str(tmp_path / "plan.wvpack")]
    run += ["--library", str(tmp_path / "build"), "--tasks", "a,b,a"]
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    done = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 requests, 3 switches" in done.stdout and "(2 prefetched)" in done.stdout
