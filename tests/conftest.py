"""Test tiers: `make test` runs everything; `make test-fast` (`-m "not slow"`) runs the tests
that need no trained suite baseline, no QEMU and no tuning, and fails any that trains one."""

import os
import tempfile

import pytest


def pytest_configure(config):
    """Builds never apply the machine's default tuning database (`wvirt tune`'s), only one a
    test makes. In the fast tier, training a suite baseline fails (fixtures of any scope
    included)."""
    os.environ["WVIRT_TUNING_DB"] = tempfile.mkdtemp(prefix="wvirt-test-tuning-")
    if "not slow" not in (config.getoption("markexpr") or ""):
        return
    from tvm_weightvirt.apps import suite

    def refuse(*args, **kwargs):
        raise AssertionError("a fast test trains a suite baseline: mark it `slow`")

    suite.train_baseline = refuse


@pytest.fixture(scope="session")
def mini_wvpack(tmp_path_factory):
    """`wvirt pack --suite wine,iris` with a short retraining, shared by the CLI tests."""
    from tvm_weightvirt.apps.cli import main

    path = tmp_path_factory.mktemp("mini") / "mini.wvpack"
    argv = ["pack", "--suite", "wine,iris", "--rounds", "1", "--iterations", "50", "-o", str(path)]
    assert main(argv) == 0
    return path
