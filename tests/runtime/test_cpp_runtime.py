"""The C++ runtime (libwvirt_runtime, driven through examples/cpp's `wv_serve`) serves every
backend's plan with the Python runtime's outputs, bit for bit, holds the same resident bytes,
prefetches as `run_many` does, and refuses bad input naming what is wrong."""

import json
import os
import subprocess

import numpy as np
import pytest
from page_plans import BACKENDS, SHAPES, echo_task, exclusive_plan, past_uint16_ids, shared_plan
from tvm_weightvirt.runtime import MultitaskRuntime, cpp_app, schedule

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples

pytestmark = pytest.mark.slow  # builds C++ with CMake

SEQUENCE = ["a", "b", "b", "a", "b"]


@pytest.fixture(scope="module")
def wv_serve():
    return cpp_app.build_wv_serve()


def _packed(tmp_path, tasks, plan, mode="materialize"):
    pack, library_dir = str(tmp_path / "plan.wvpack"), str(tmp_path / "build")
    wv.save_wvpack(pack, plan, tasks)
    library = wv.build(wv.lower(tasks, plan, mode=mode))
    library.export(library_dir)
    return pack, library_dir, MultitaskRuntime(plan, library, level2=pack)


def _echo_requests(seed=0):
    rng = np.random.default_rng(seed)
    return [(t, [rng.normal(size=s).astype(np.float32) for s in SHAPES[t]]) for t in SEQUENCE]


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for outputs, wanted in zip(got, expected):
        assert [(y.shape, y.dtype) for y in outputs] == [(y.shape, y.dtype) for y in wanted]
        for y, w in zip(outputs, wanted):
            np.testing.assert_array_equal(y, w)


@pytest.mark.parametrize("backend", [*BACKENDS, "tir gather, int32 page tables"])
def test_every_backend_serves_the_python_runtimes_outputs_bit_for_bit(wv_serve, tmp_path, backend):
    if backend in BACKENDS:
        mode, page_size, make_plan = BACKENDS[backend]
    else:
        mode, page_size, make_plan = (
            "materialize",
            100,
            lambda t, p: past_uint16_ids(shared_plan(t, p)),
        )
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    pack, library_dir, python = _packed(tmp_path, tasks, make_plan(tasks, page_size), mode)
    requests = _echo_requests()
    expected = python.run_many(requests)
    got, report = cpp_app.serve(wv_serve, library_dir, pack, requests, str(tmp_path / "serve"))
    _assert_same(got, expected)
    assert (report.requests, report.switches) == (5, 4)
    assert report.prefetch_hits == python.counters.prefetch_hits
    assert report.prefetch_hits == (3 if "exclusive" in backend else 0)
    assert report.resident_bytes == python.resident_bytes


def test_weight_transforms_run_at_the_switch_as_in_python(wv_serve, tmp_path):
    """Real graphs whose weight-only ops (transposes of dense weights) run at the switch."""
    tasks, requests = [], []
    for name, kind, seed in [("a", "cnn2d", 0), ("b", "cnn2d", 1), ("m", "mlp", 2)]:
        model, x = examples.torch_model(kind, seed)
        tasks.append(wv.Task.from_torch(model, (x,), name=name))
        requests.append((name, [x.numpy()]))
    requests += requests[::-1]
    pack, library_dir, python = _packed(tmp_path, tasks, wv.PagePlan.lossless(tasks, 100))
    expected = [python.run(task, *inputs) for task, inputs in requests]
    got, report = cpp_app.serve(wv_serve, library_dir, pack, requests, str(tmp_path / "serve"))
    _assert_same(got, expected)
    assert report.switches == python.counters.switches == 5  # a b m (m) b a


@pytest.fixture
def echo_pack(tmp_path):
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    pack, library_dir, _ = _packed(tmp_path, tasks, shared_plan(tasks, 100))
    return pack, library_dir


def test_a_pack_of_other_tasks_is_refused(wv_serve, tmp_path, echo_pack):
    _, library_dir = echo_pack
    tasks = [echo_task(name, [(7,)]) for name in ("a", "c")]
    other = str(tmp_path / "other.wvpack")
    wv.save_wvpack(other, wv.PagePlan.lossless(tasks, 100), tasks)
    with pytest.raises(RuntimeError, match="library and pack do not belong together: .*'c'"):
        cpp_app.serve(wv_serve, library_dir, other, [], str(tmp_path / "serve"))
    tasks = [echo_task(name, [(7,)]) for name in ("a", "b")]  # the same names, other weights
    wv.save_wvpack(other, wv.PagePlan.lossless(tasks, 100), tasks)
    with pytest.raises(RuntimeError, match="task 'a': the library's weights are not the pack's"):
        cpp_app.serve(wv_serve, library_dir, other, [], str(tmp_path / "serve"))


@pytest.mark.parametrize(
    "request_, message",
    [
        (("z", []), r"no task 'z' in this runtime \(has a, b\)"),
        (("b", [np.zeros((2, 2, 40), np.float32)]), "task 'b' takes 2 inputs, the line names 1"),
        (
            ("b", [np.zeros((2, 40), np.float32), np.zeros(77, np.float32)]),
            r"request0.in0.npy' holds .*\(2, 40\).*the input must be .*\(2, 2, 40\)",
        ),
        (
            ("b", [np.zeros((2, 2, 40)), np.zeros(77, np.float32)]),
            r"request0.in0.npy' holds \{'descr': '<f8'.*the input must be \{'descr': '<f4'",
        ),
    ],
)
def test_a_bad_request_names_the_task_input_or_file(
    wv_serve, tmp_path, echo_pack, request_, message
):
    pack, library_dir = echo_pack
    with pytest.raises(RuntimeError, match=message):
        cpp_app.serve(wv_serve, library_dir, pack, [request_], str(tmp_path / "serve"))


def test_a_missing_or_truncated_pack_and_an_old_library_are_refused(wv_serve, tmp_path, echo_pack):
    pack, library_dir = echo_pack
    serve_dir = str(tmp_path / "serve")
    with pytest.raises(RuntimeError, match="nowhere.wvpack': cannot open"):
        cpp_app.serve(wv_serve, library_dir, str(tmp_path / "nowhere.wvpack"), [], serve_dir)
    data = open(pack, "rb").read()
    truncated = tmp_path / "truncated.wvpack"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(RuntimeError, match="tensor '.*': its byte range does not fit"):
        cpp_app.serve(wv_serve, library_dir, str(truncated), [], serve_dir)
    meta_path = tmp_path / "build" / "library.json"
    meta = json.loads(meta_path.read_text())
    for signature in meta["tasks"].values():
        del signature["outputs"]  # what a library.json written before the C++ runtime holds
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="names no outputs for task 'a': build it again"):
        cpp_app.serve(wv_serve, library_dir, pack, [], serve_dir)


def test_the_c_api_is_c99(tmp_path):
    """`wvirt.h` is a C header (a firmware or C app includes it), not C++ in disguise."""
    program = tmp_path / "uses_wvirt.c"
    program.write_text('#include "wvirt.h"\nint main(void) { return wv_task_count(0); }\n')
    done = subprocess.run(
        ["cc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only"]
        + ["-I", cpp_app.HEADERS, str(program)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_an_aarch64_build_computes_the_x86_outputs_under_qemu(wv_serve, tmp_path):
    """`wvirt build --target aarch64` links the library with aarch64-linux-gnu-g++; the app,
    cross-built against the aarch64 wheels' TVM runtime, serves it under qemu-aarch64 with the
    x86 outputs up to float32 rounding (LLVM fuses multiply-adds on aarch64), the same
    switches, prefetches and resident bytes."""
    from tvm_weightvirt.apps.cli import main

    triple = "aarch64-linux-gnu"
    tasks, requests = [], []
    for name, kind, seed in [("a", "cnn2d", 0), ("m", "mlp", 2)]:
        model, x = examples.torch_model(kind, seed)
        tasks.append(wv.Task.from_torch(model, (x,), name=name))
        requests.append((name, [x.numpy()]))
    requests += requests[::-1]
    plan = wv.PagePlan.lossless(tasks, 100)
    pack = str(tmp_path / "plan.wvpack")
    wv.save_wvpack(pack, plan, tasks)
    libraries = {cpu: str(tmp_path / cpu) for cpu in ("llvm", "aarch64")}
    for cpu, folder in libraries.items():
        assert main(["build", pack, "--target", cpu, "-o", folder]) == 0
    with open(os.path.join(libraries["aarch64"], "library.so"), "rb") as f:
        assert int.from_bytes(f.read(20)[18:20], "little") == 183  # ELF e_machine: EM_AARCH64
    host, host_report = cpp_app.serve(
        wv_serve, libraries["llvm"], pack, requests, str(tmp_path / "x86")
    )
    arm, arm_report = cpp_app.serve(
        cpp_app.build_wv_serve(triple=triple),
        libraries["aarch64"],
        pack,
        requests,
        str(tmp_path / "arm"),
        run_with=cpp_app.emulator(triple),
    )
    assert arm_report.switches == host_report.switches == 3
    assert arm_report.resident_bytes == host_report.resident_bytes
    for outputs, wanted in zip(arm, host):
        for y, w in zip(outputs, wanted):
            assert y.shape == w.shape and y.dtype == w.dtype
            np.testing.assert_allclose(y, w, rtol=1e-6, atol=1e-6)


def test_grouped_queues_are_served_in_the_python_schedulers_order(wv_serve, tmp_path):
    """`wv_schedule` (wv_serve --policy group) orders random queues as `schedule` does, and the
    outputs, switches and prefetches are those of `run_many` with the same policy."""
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    pack, library_dir, _ = _packed(tmp_path, tasks, exclusive_plan(tasks, 100))
    plan, library = wv.load_wvpack(pack, graphs=False).plan, wv.Library.load(library_dir)
    rng = np.random.default_rng(3)
    for trial in range(6):
        names = rng.choice(["a", "b"], int(rng.integers(1, 25))).tolist()
        max_wait = int(rng.integers(0, 6))
        requests = [(t, [rng.normal(size=s).astype(np.float32) for s in SHAPES[t]]) for t in names]
        python = MultitaskRuntime(plan, library, level2=pack)
        expected = python.run_many(requests, policy="group", max_wait=max_wait)
        work = str(tmp_path / f"q{trial}")
        got, report = cpp_app.serve(
            wv_serve, library_dir, pack, requests, work, policy="group", max_wait=max_wait
        )
        assert report.order == tuple(schedule(names, "group", max_wait))
        _assert_same(got, expected)
        assert report.switches == python.counters.switches
        assert report.prefetch_hits == python.counters.prefetch_hits
