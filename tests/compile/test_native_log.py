"""TVM's C++ warnings that a user cannot act on are dropped; every other native line is kept."""

import os

from tvm_weightvirt.compile.native_log import TAKE_FAST_MODE, without_native_lines


def test_marked_lines_dropped_others_kept_in_order(capfd, monkeypatch):
    monkeypatch.delenv("WVIRT_DEBUG", raising=False)
    with without_native_lines(TAKE_FAST_MODE):
        os.write(2, b"first\n")
        os.write(2, b"[12:00:00] transform.h:1261: Warning: " + TAKE_FAST_MODE + b". Make sure\n")
        os.write(2, b"second\n")
    assert capfd.readouterr().err == "first\nsecond\n"


def test_debug_keeps_everything(capfd, monkeypatch):
    monkeypatch.setenv("WVIRT_DEBUG", "1")
    with without_native_lines(TAKE_FAST_MODE):
        os.write(2, TAKE_FAST_MODE + b"\n")
    assert capfd.readouterr().err == TAKE_FAST_MODE.decode() + "\n"


def test_stderr_restored_after_an_error(capfd, monkeypatch):
    monkeypatch.delenv("WVIRT_DEBUG", raising=False)
    try:
        with without_native_lines(TAKE_FAST_MODE):
            os.write(2, b"before the error\n")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before the error\nafter\n"
