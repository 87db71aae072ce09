"""MetaSchedule tuning: a few trials per kernel of one small task build a library whose outputs
are the untuned library's, a second build with the database runs no trials, a corrupt database
or a bad option is a clear error, and trials can be measured through a loopback RPC tracker.

The first tuning in a process imports TVM's tensor intrinsics (about a minute here): every
tuning test shares the module's one tuned build."""

import os
import shutil

import numpy as np
import pytest
import tvm
from tvm_weightvirt.runtime import MultitaskRuntime, StandaloneModel

import tvm_weightvirt as wv
from tvm_weightvirt.apps import examples
from tvm_weightvirt.compile.tuning import RPCTracker, TuningOptions

pytestmark = pytest.mark.slow  # MetaSchedule runs

TRIALS = 1  # per kernel


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """An MLP task in materialize mode: its untuned library, and one tuned into a database."""
    model, x = examples.torch_model("mlp", 2)
    task = wv.Task.from_torch(model, (x,), name="mlp")
    plan = wv.PagePlan.lossless([task], page_size=100)
    mod = wv.lower([task], plan, "materialize")
    database = str(tmp_path_factory.mktemp("tuning") / "db")
    library = wv.build(mod, tuning=wv.TuningOptions(database, TRIALS))
    return task, x.numpy(), plan, mod, database, wv.build(mod), library


def _outputs(plan, library, x):
    return MultitaskRuntime(plan, library).run("mlp", x)[0]


def test_tuned_build_computes_what_the_untuned_one_does(tuned):
    task, x, plan, mod, database, untuned, library = tuned
    report = library.tuning
    # 2 matmul+bias(+relu) kernels, 2 weight transposes, the page gather
    assert report["kernels"] == 5
    assert report["reused"] == 0
    assert 0 < report["trials"] <= (TRIALS + 1) * 5  # + each kernel's untuned schedule
    # every kernel, the gather too, runs a tuned schedule or keeps its default one, which the
    # best tuned one did not beat by the margin (which of the two depends on the machine)
    assert report["scheduled"] + report["kept_default"] == 5
    assert report["database_bytes"] > 0
    # Tuned reductions sum in another order: equal up to float32 rounding, not bit for bit.
    np.testing.assert_allclose(
        _outputs(plan, library, x), _outputs(plan, untuned, x), rtol=1e-5, atol=1e-6
    )


def test_second_build_reuses_the_database_without_trials(tuned):
    task, x, plan, mod, database, untuned, library = tuned
    again = wv.build(mod, tuning=wv.TuningOptions(database, TRIALS))
    assert again.tuning["trials"] == 0
    assert again.tuning["reused"] == 5
    # each kernel's choice (tuned or default) was timed once and kept beside the database
    assert (again.tuning["scheduled"], again.tuning["kept_default"]) == (
        library.tuning["scheduled"],
        library.tuning["kept_default"],
    )
    assert os.path.exists(os.path.join(database, "tuned_or_default.json"))
    np.testing.assert_array_equal(_outputs(plan, again, x), _outputs(plan, library, x))
    # the plain model compiled alone finds its 4 kernels in the same database
    plain = StandaloneModel(task, tuning_db=database)
    assert plain.tuning.scheduled + plain.tuning.kept_default == 4
    np.testing.assert_array_equal(plain.run(x)[0], _outputs(plan, library, x))


def test_corrupt_database_is_a_clear_error(tuned, tmp_path):
    task, x, plan, mod, database, untuned, library = tuned
    corrupt = tmp_path / "db"
    shutil.copytree(database, corrupt)
    with open(corrupt / "database_tuning_record.json", "a") as f:
        f.write('[0, [["garbage"\n')
    with pytest.raises(ValueError, match=r"database_tuning_record.json' is corrupt: line \d+"):
        wv.build(mod, tuning=wv.TuningOptions(str(corrupt)))


def test_bad_tuning_options_are_clear_errors(tuned, tmp_path):
    task, x, plan, mod, database, untuned, library = tuned
    with pytest.raises(ValueError, match="--tune needs --tuning-db"):
        TuningOptions.from_flags(4, None, None, None)
    with pytest.raises(ValueError, match=r"no tuning database at .*missing.*\(trials > 0\)"):
        wv.TuningOptions(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"no tuning database at .*missing.*\(--tune\)"):
        TuningOptions.from_flags(0, str(tmp_path / "missing"), None, None)
    with pytest.raises(ValueError, match="give --tune TRIALS too"):
        TuningOptions.from_flags(0, database, "127.0.0.1:9190", "k")
    with pytest.raises(ValueError, match="needs --rpc-key"):
        TuningOptions.from_flags(4, database, "127.0.0.1:9190", None)
    with pytest.raises(ValueError, match="give --rpc-tracker too"):
        TuningOptions.from_flags(4, database, None, "k")
    with pytest.raises(ValueError, match="--tune -1: trials must be at least 0"):
        TuningOptions.from_flags(-1, database, None, None)
    with pytest.raises(ValueError, match="tuning trials must be at least 0, got -1"):
        wv.TuningOptions(database, -1)
    with pytest.raises(ValueError, match="an RPC device measures tuning trials"):
        wv.TuningOptions(database, 0, RPCTracker("127.0.0.1", 9190, "k"))
    assert TuningOptions.from_flags(0, None, None, None) is None
    with pytest.raises(ValueError, match="schedules for \\['llvm'\\], not cuda"):
        wv.build(mod, target={"kind": "cuda", "arch": "sm_87"}, tuning=wv.TuningOptions(database))


@pytest.mark.skipif(tvm.cuda().exist, reason="checks the message on a machine without a GPU")
def test_cuda_tuning_without_a_gpu_says_so(tuned, tmp_path):
    task, x, plan, mod, database, untuned, library = tuned
    with pytest.raises(ValueError, match="tuning for cuda needs a GPU"):
        wv.build(
            mod,
            target={"kind": "cuda", "arch": "sm_87"},
            tuning=wv.TuningOptions(str(tmp_path), 4),
        )


def test_a_cuda_database_tuned_elsewhere_applies_without_a_gpu(tuned, tmp_path):
    """A database as a GPU machine would write it (here: each kernel's first design space
    sampled, not timed) schedules a cuda build on this machine."""
    import tvm.s_tir.meta_schedule as ms

    from tvm_weightvirt.abi import GATHER_FUNCS
    from tvm_weightvirt.compile import tuning

    task, x, plan, mod, database, untuned, library = tuned
    target = tuning.tuning_target(tvm.target.Target({"kind": "cuda", "arch": "sm_87"}))
    cuda_db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    kernels = tuning.kernels(tuning.fuse(mod, target), target)
    for name, kernel in kernels.items():
        if name in GATHER_FUNCS:
            continue  # dlight schedules the gather
        context = ms.TuneContext(kernel, target=target, space_generator="post-order-apply")
        schedule = context.generate_design_space()[0]
        cuda_db.commit_tuning_record(
            ms.database.TuningRecord(
                schedule.trace,
                cuda_db.commit_workload(kernel),
                run_secs=[1e-5],
                target=target,
                args_info=ms.arg_info.ArgInfo.from_prim_func(kernel["main"]),
            )
        )
    built = wv.build(
        mod, target={"kind": "cuda", "arch": "sm_87"}, tuning=wv.TuningOptions(str(tmp_path))
    )
    assert built.tuning["trials"] == 0
    assert built.tuning["scheduled"] == 4  # the 4 kernels of the task function


@pytest.mark.slow
def test_trials_measured_through_a_loopback_rpc_tracker(tuned, tmp_path):
    """TVM's RPC tracker and a server registered under a key, as on a device farm."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    task, x, plan, mod, database, untuned, library = tuned
    tracker = Tracker("127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(
        "127.0.0.1",
        port=9300,
        port_end=9400,
        key="wv-loopback",
        tracker_addr=("127.0.0.1", tracker.port),
        silent=True,
    )
    try:
        remote = wv.build(
            mod,
            tuning=wv.TuningOptions(
                str(tmp_path / "db"), 2, RPCTracker("127.0.0.1", tracker.port, "wv-loopback")
            ),
        )
    finally:
        server.terminate()
        tracker.terminate()
    assert 0 < remote.tuning["trials"] <= 2 * 5
    # a loopback device is this machine: its kernels are timed against the defaults here too
    assert remote.tuning["scheduled"] + remote.tuning["kept_default"] == 5
    np.testing.assert_allclose(
        _outputs(plan, remote, x), _outputs(plan, untuned, x), rtol=1e-5, atol=1e-6
    )


def test_wvirt_tune_fills_the_default_database_that_builds_apply(mini_wvpack, tmp_path, capsys):
    """`wvirt tune` writes the target's default database ($WVIRT_TUNING_DB here); `wvirt build`
    then applies it without a flag, and --no-tuning-db builds with the default schedules."""
    from tvm_weightvirt.apps.cli import main
    from tvm_weightvirt.compile.tuning import default_database

    assert default_database("llvm") is None  # conftest: an empty folder
    assert main(["tune", str(mini_wvpack), "--trials", "1"]) == 0
    tuned = capsys.readouterr().out
    assert default_database("llvm") == os.environ["WVIRT_TUNING_DB"]
    assert f"database {os.environ['WVIRT_TUNING_DB']}" in tuned
    assert main(["build", str(mini_wvpack), "-o", str(tmp_path / "tuned")]) == 0
    built = capsys.readouterr().out
    assert "tuning: 0 trials" in built and "kept the default one" in built
    assert main(["build", str(mini_wvpack), "--no-tuning-db", "-o", str(tmp_path / "plain")]) == 0
    assert "tuning:" not in capsys.readouterr().out
