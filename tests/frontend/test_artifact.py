"""The .wvpack artifact round-trips bit for bit and rejects every kind of damage clearly."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy
import tvm
from page_plans import SHAPES, coded_plan, echo_task, past_uint16_ids
from safetensors import safe_open

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.frontend.artifact import _manifest_and_digest, _sha256, _sha256_text


@pytest.fixture(scope="module")
def tasks():
    out = []
    for seed, kind in enumerate(["cnn2d", "mlp"]):
        model, x = examples.torch_model(kind, seed)
        out.append(wv.Task.from_torch(model, (x,), name=kind))
    return out


@pytest.fixture
def pack(tmp_path, tasks):
    path = tmp_path / "suite.wvpack"
    plan = wv.PagePlan.lossless(tasks, page_size=100)
    size = wv.save_wvpack(path, plan, tasks)
    assert size == os.path.getsize(path)
    return path, plan


def test_round_trip_is_bit_exact(pack, tasks):
    path, plan = pack
    loaded = wv.load_wvpack(path)
    assert loaded.plan.page_size == 100
    assert loaded.plan.pool.tobytes() == plan.pool.tobytes()
    for name, task_pages in plan.tasks.items():
        got = loaded.plan.task(name)
        assert got.layout == task_pages.layout
        np.testing.assert_array_equal(got.page_table, task_pages.page_table)
    for original, task in zip(tasks, loaded.tasks):
        assert task.name == original.name
        tvm.ir.assert_structural_equal(task.mod, original.mod)
        for key, w in original.weights.items():
            assert task.weights[key].tobytes() == w.tobytes()


def test_the_same_pack_is_the_same_bytes(pack, tasks, tmp_path):
    path, plan = pack
    again = tmp_path / "again.wvpack"
    for _ in range(3):  # safetensors would order several metadata entries differently
        wv.save_wvpack(again, plan, tasks)
        assert again.read_bytes() == path.read_bytes()


def test_a_format_1_pack_still_loads(pack, tasks):
    """Format 1 kept the manifest's digest in a second metadata entry."""
    path, plan = pack
    with safe_open(str(path), framework="np") as f:
        text = _manifest_and_digest(f.metadata())[0]
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    text = json.dumps({**json.loads(text), "version": 1})
    path.write_bytes(
        safetensors.numpy.save(tensors, {"wvpack": text, "wvpack_sha256": _sha256_text(text)})
    )
    loaded = wv.load_wvpack(path)
    assert loaded.plan.pool.tobytes() == plan.pool.tobytes() and len(loaded.tasks) == len(tasks)


def test_plan_only_pack_has_no_graphs(tmp_path, tasks):
    path = tmp_path / "plan.wvpack"
    wv.save_wvpack(path, wv.PagePlan.lossless(tasks, page_size=64))
    loaded = wv.load_wvpack(path)
    assert loaded.tasks == [] and sorted(loaded.plan.tasks) == ["cnn2d", "mlp"]


def test_failed_write_leaves_the_old_file(pack, tasks, monkeypatch):
    path, plan = pack
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        wv.save_wvpack(path, wv.PagePlan.lossless(tasks, page_size=50), tasks)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def _nan_in_first_weight(plan, name):
    """`plan` with the first weight of task `name` NaN at its first element (its first page's
    first slot: the layout starts there)."""
    pool = plan.pool.copy()
    pool[plan.task(name).page_table[0], 0] = np.nan
    return wv.PagePlan(plan.page_size, pool, plan.tasks), plan.task(name).layout.names[0]


def test_a_plan_or_report_holding_nan_or_a_missing_folder_is_refused_and_nothing_written(
    tmp_path, tasks
):
    plan = wv.PagePlan.lossless(tasks, page_size=100)
    bad_plan, weight = _nan_in_first_weight(plan, "mlp")
    path = tmp_path / "nan.wvpack"
    page = int(plan.task("mlp").page_table[0])
    message = rf"task 'mlp': weights {weight} hold NaN or inf; pool pages \[{page}\] \(1 of"
    with pytest.raises(wv.ArtifactError, match=message):
        wv.save_wvpack(path, bad_plan, tasks)
    report = {"tasks": {"mlp": {"acc_packed": float("nan"), "pages": 3}}, "ratio": float("inf")}
    with pytest.raises(wv.ArtifactError, match="report tasks.mlp.acc_packed is nan; report ratio"):
        wv.save_wvpack(path, plan, tasks, report)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(wv.ArtifactError, match="not written: folder '.*nope' does not exist"):
        wv.save_wvpack(tmp_path / "nope" / "a.wvpack", plan, tasks)


def test_a_pack_holding_nan_does_not_load_and_inspect_exits_2(tmp_path, tasks, monkeypatch, capsys):
    from tvm_weightvirt.apps.cli import main

    bad_plan, weight = _nan_in_first_weight(wv.PagePlan.lossless(tasks, page_size=100), "mlp")
    path = tmp_path / "nan.wvpack"
    with monkeypatch.context() as patch:  # as a writer without the check would have written it
        patch.setattr(wv.PagePlan, "non_finite", lambda self: [])
        wv.save_wvpack(path, bad_plan)
    with pytest.raises(wv.ArtifactError, match=f"task 'mlp': weights {weight} hold NaN or inf"):
        wv.load_wvpack(path)
    assert main(["inspect", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "hold NaN or inf" in err, err


def test_missing_file(tmp_path):
    with pytest.raises(wv.ArtifactError, match="no such file"):
        wv.load_wvpack(tmp_path / "nope.wvpack")


def test_truncated_file(pack):
    path, _ = pack
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 17])
    with pytest.raises(wv.ArtifactError, match="not a readable safetensors file"):
        wv.load_wvpack(path)


def test_flipped_byte_in_pool_data(pack):
    path, plan = pack
    blob = bytearray(path.read_bytes())
    blob[-200] ^= 0x01  # inside the tensor data (the pool or a graph)
    path.write_bytes(bytes(blob))
    with pytest.raises(wv.ArtifactError, match="fails its sha256 check"):
        wv.load_wvpack(path)


def test_flipped_byte_in_manifest(pack):
    path, _ = pack
    blob = bytearray(path.read_bytes())
    at = blob.index(b"100", blob.index(b"page_size"))  # JSON inside the JSON header
    blob[at + 1] = ord("2")  # page size 100 -> 120
    path.write_bytes(bytes(blob))
    with pytest.raises(wv.ArtifactError, match="manifest checksum mismatch"):
        wv.load_wvpack(path)


def _rewrite(path, edit_manifest=None, edit_tensors=None):
    """Re-save the pack after an edit, with checksums recomputed: damage that checksums cannot
    see, which only the structural checks can catch."""
    with safe_open(str(path), framework="np") as f:
        manifest = json.loads(_manifest_and_digest(f.metadata())[0])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    for key, t in tensors.items():
        manifest["tensors"][key] = {
            "shape": list(t.shape),
            "dtype": str(t.dtype),
            "sha256": _sha256(t),
        }
    if edit_manifest:
        edit_manifest(manifest)
    text = json.dumps(manifest)
    envelope = json.dumps({"sha256": _sha256_text(text), "manifest": text})
    path.write_bytes(safetensors.numpy.save(tensors, {"wvpack": envelope}))


def test_page_id_out_of_range(pack):
    path, plan = pack

    def bad_table(tensors):
        tensors["page_table.mlp"] = tensors["page_table.mlp"].copy()
        tensors["page_table.mlp"][3] = 9999

    _rewrite(path, edit_tensors=bad_table)
    # cnn2d: 666 weights (its batch norm folded) on 698 aligned slots = 7 pages; mlp: 2114 = 22
    with pytest.raises(
        wv.ArtifactError,
        match=r"task .mlp.: page ids \[9999\] out of range \[0, 29\) \(29 pool \+ 0 exclusive",
    ):
        wv.load_wvpack(path)


def test_page_tables_are_stored_uint16_until_the_ids_need_int32(pack, tmp_path):
    """Tables are stored as the kernels read them: uint16 while every page id fits (65,536
    ids), int32 past that; both load back to the same tables."""
    path, plan = pack
    large = past_uint16_ids(plan)
    large_path = tmp_path / "large.wvpack"
    wv.save_wvpack(large_path, large)
    for p, dtype in [(path, np.uint16), (large_path, np.int32)]:
        with safe_open(str(p), framework="np") as f:
            assert {f.get_tensor(f"page_table.{n}").dtype for n in plan.tasks} == {np.dtype(dtype)}
        loaded = wv.load_wvpack(p).plan
        assert loaded.page_table_dtype == dtype
        for name, t in plan.tasks.items():
            np.testing.assert_array_equal(loaded.task(name).page_table, t.page_table)
    assert large.page_table_bytes == 2 * plan.page_table_bytes == 4 * (7 + 22)


def test_page_table_of_floats(pack):
    path, _ = pack

    def floats(tensors):
        tensors["page_table.mlp"] = tensors["page_table.mlp"].astype(np.float32)

    _rewrite(path, edit_tensors=floats)
    with pytest.raises(wv.ArtifactError, match="task 'mlp': page table is float32, not one of"):
        wv.load_wvpack(path)


def test_page_id_used_twice(pack):
    path, _ = pack

    def dup(tensors):
        tensors["page_table.mlp"] = tensors["page_table.mlp"].copy()
        tensors["page_table.mlp"][1] = tensors["page_table.mlp"][0]

    _rewrite(path, edit_tensors=dup)
    with pytest.raises(wv.ArtifactError, match="task 'mlp': page ids .* used twice"):
        wv.load_wvpack(path)


def test_wrong_format_version(pack):
    path, _ = pack
    _rewrite(path, edit_manifest=lambda m: m.update(version=99))
    with pytest.raises(
        wv.ArtifactError, match="format version 99 is not supported .*reads versions 1, 2, 3, 4, 5"
    ):
        wv.load_wvpack(path)


def test_float32_bases_of_a_format_4_pack_load_only_where_float16_holds_them(tmp_path):
    """Before format 5, SmartDeal bases were stored float32: such a file loads (bases as
    float16, the same pages) where every value is a float16, and is refused, naming the tensor,
    where decoding would change."""
    plan = coded_plan([echo_task(n, shapes) for n, shapes in SHAPES.items()], 96)
    path = tmp_path / "coded.wvpack"
    wv.save_wvpack(path, plan)

    def float32_bases(tensors):
        tensors["pool_bases"] = tensors["pool_bases"].astype(np.float32)

    _rewrite(path, edit_manifest=lambda m: m.update(version=4), edit_tensors=float32_bases)
    loaded = wv.load_wvpack(path).plan
    assert loaded.coded.bases.dtype == np.float16
    np.testing.assert_array_equal(loaded.pool, plan.pool)

    def off_float16(tensors):
        tensors["pool_bases"] = tensors["pool_bases"].copy()
        tensors["pool_bases"][0, 1, 2] = np.float32(0.1)  # not a float16

    _rewrite(path, edit_tensors=off_float16)
    with pytest.raises(
        wv.ArtifactError, match="bases 'pool_bases' are float32 values that float16"
    ):
        wv.load_wvpack(path)


def _grow_fc1(entry):
    entry["layout"][0]["shape"] = [64, 300]  # fc1.weight 64x30 -> 64x300: 2114 + 17280 weights
    for e in entry["layout"][1:]:
        e["offset"] += 64 * 270


def _transpose_fc1(entry):
    entry["layout"][0]["shape"] = [30, 64]  # same size, other shape than the graph's


@pytest.mark.parametrize(
    "edit, message",
    [
        (_grow_fc1, "task 'mlp': layout needs 194 pages, the manifest says 22"),
        (_transpose_fc1, "task 'mlp': graph does not match its layout"),
    ],
    ids=["page table", "graph"],
)
def test_layout_that_does_not_match(pack, edit, message):
    """A layout is checked against the page table's length and against the task's graph."""
    path, _ = pack
    _rewrite(path, edit_manifest=lambda m: edit(next(t for t in m["tasks"] if t["name"] == "mlp")))
    with pytest.raises(wv.ArtifactError, match=message):
        wv.load_wvpack(path)


def test_tensor_shape_differs_from_manifest(pack):
    path, _ = pack

    def lie(m):
        m["tensors"]["pool"]["shape"] = [28, 100]

    _rewrite(path, edit_manifest=lie)
    with pytest.raises(
        wv.ArtifactError,
        match=r"tensor 'pool' is \[29, 100\] float32, the manifest says \[28, 100\]",
    ):
        wv.load_wvpack(path)


_KILLED_WRITER = """
import sys
import numpy as np
import tvm_weightvirt as wv
from tvm_weightvirt.frontend.artifact import save_wvpack
layout = wv.PageLayout.from_weights({"w": ((1024, 1024), "float32")}, 1024, "big")
pool = np.random.default_rng(1).normal(size=(1024, 1024)).astype(np.float32)
plan = wv.PagePlan(1024, pool, {"big": wv.TaskPages(layout, np.arange(1024))})
print("ready", flush=True)
sys.stdin.readline()
save_wvpack(sys.argv[1], plan)
print("saved", flush=True)
"""


def test_save_killed_at_a_random_point_leaves_the_old_file_or_the_new_one(tmp_path):
    """A `save_wvpack` SIGKILLed anywhere in its write leaves, under the target name, either the
    old pack intact or the new one complete (20 kills spread over the measured write time)."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "suite.wvpack"
    layout = wv.PageLayout.from_weights({"w": ((1024, 1024), "float32")}, 1024, "big")
    old = wv.PagePlan(
        1024, np.zeros((1024, 1024), np.float32), {"big": wv.TaskPages(layout, np.arange(1024))}
    )
    wv.save_wvpack(path, old)
    old_bytes = path.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

    def writer() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline() == "ready\n"
        return proc

    proc = writer()  # one whole write, timed from the go signal, gives the new file
    start = time.perf_counter()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "saved\n"
    write_seconds = time.perf_counter() - start
    proc.wait()
    new_pool = wv.load_wvpack(path).plan.pool
    assert new_pool.any()
    rng = np.random.default_rng(0)
    outcomes = set()
    for delay in rng.uniform(0, 1.2 * write_seconds, 20):
        path.write_bytes(old_bytes)
        proc = writer()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.read_bytes() == old_bytes:
            outcomes.add("old")
        else:  # complete: it loads, checksums and all, with the new pool
            np.testing.assert_array_equal(wv.load_wvpack(path).plan.pool, new_pool)
            outcomes.add("new")
    assert "old" in outcomes  # some kills landed before the rename
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert all(n.startswith(".suite.wvpack.") and n.endswith(".tmp") for n in leftovers), leftovers
