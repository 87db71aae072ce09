"""A Cortex-M project is also a firmware's static library: examples/firmware, built with CMake on
the project's CMakeLists.txt and toolchain.cmake, calls every task through wvirt.h on QEMU and
prints the host build's outputs bit for bit, which are each task's own arithmetic."""

import re
import subprocess

import numpy as np
import pytest
from page_plans import SHAPES, echo_task, exclusive_plan

from tvm_weightvirt.targets import mcu
from tvm_weightvirt.targets.mcu.boards import SEMIHOSTING_QEMU_FLAGS
from tvm_weightvirt.targets.mcu.firmware_library import build_example_firmware, firmware_files

QEMU = ["qemu-system-arm", "-M", "mps2-an386", *SEMIHOSTING_QEMU_FLAGS.split()]
needs_arm = pytest.mark.skipif(
    bool(mcu.missing_tools()), reason="no Arm toolchain / QEMU (`make arm-toolchain`)"
)


def _printed(command: list[str]) -> dict[tuple[str, int], np.ndarray]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.endswith("done\n"), done.stdout + done.stderr
    outputs = {}
    for task, k, words in re.findall(r"task (\w+) out +(\d+)((?: [0-9a-f]{8})+)", done.stdout):
        outputs[task, int(k)] = np.array([int(w, 16) for w in words.split()], np.uint32)
    return outputs


@pytest.mark.slow  # CMake builds, QEMU
@needs_arm
def test_the_example_firmware_runs_every_task_through_wvirt_h(tmp_path):
    """Echo tasks (outputs = inputs x weights, with several of each) on shared and exclusive
    pages: on QEMU the outputs are the host's, and the host's are numpy's products exactly."""
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = exclusive_plan(tasks, 100)
    project = str(tmp_path / "project")
    mcu.generate_project(tasks, plan, project)
    header = open(f"{project}/wvirt.h").read()
    assert "WV_TASK_A = 0" in header and "WV_TASK_B = 1" in header
    assert "#define WV_A_N_INPUTS 3" in header and "#define WV_B_OUTPUT0_BYTES 640" in header
    firmware = build_example_firmware(project, str(tmp_path / "fw"))
    on_qemu = _printed([*QEMU, "-kernel", firmware])
    on_host = _printed([build_example_firmware(project, str(tmp_path / "host"), host=True)])
    assert sorted(on_qemu) == sorted(on_host) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    for key, words in on_qemu.items():
        np.testing.assert_array_equal(words, on_host[key])
    for task in tasks:  # the firmware's input pattern times the task's weights (the plan's)
        weights = plan.read(task.name)
        for k, name in enumerate(weights):
            x = (0.25 * (np.arange(weights[name].size) % 7) - 0.75).astype(np.float32)
            expected = (x * weights[name].reshape(-1)).view(np.uint32)
            np.testing.assert_array_equal(on_host[task.name, k], expected)


@pytest.mark.slow
@needs_arm
def test_exclusive_pages_read_through_the_firmwares_page_reader(tmp_path):
    """Built WVIRT_EXCLUSIVE_EXTERNAL, the firmware links no exclusive page: a switch reads them
    from the project's exclusive_pages.bin through the reader it set (on QEMU, a host file read
    by semihosting), with the outputs of the build that has them in flash, bit for bit."""
    tasks = [echo_task(name, shapes) for name, shapes in SHAPES.items()]
    plan = exclusive_plan(tasks, 100)
    project = str(tmp_path / "project")
    mcu.generate_project(tasks, plan, project)
    stored = np.fromfile(f"{project}/exclusive_pages.bin", np.float32)
    np.testing.assert_array_equal(
        stored, np.concatenate([plan.task(n).exclusive_pages.ravel() for n in ("a", "b")])
    )
    builds = {
        external: build_example_firmware(
            project, str(tmp_path / f"fw{external}"), exclusive_external=external
        )
        for external in (False, True)
    }
    sections = {external: _sections(elf) for external, elf in builds.items()}
    assert sections[False][".wv_exclusive"] == stored.nbytes == 3 * 100 * 4
    assert ".wv_exclusive" not in sections[True]
    outputs = {external: _printed([*QEMU, "-kernel", elf]) for external, elf in builds.items()}
    assert sorted(outputs[True]) == sorted(outputs[False])
    for key, words in outputs[True].items():
        np.testing.assert_array_equal(words, outputs[False][key])
    host = build_example_firmware(
        project, str(tmp_path / "host"), host=True, exclusive_external=True
    )
    for key, words in _printed([host]).items():
        np.testing.assert_array_equal(words, outputs[False][key])


def _sections(elf: str) -> dict[str, int]:
    done = subprocess.run(["arm-none-eabi-size", "-A", elf], capture_output=True, text=True)
    return {m[0]: int(m[1]) for m in re.findall(r"^(\.\S+)\s+(\d+)", done.stdout, re.M)}


def test_task_names_that_differ_only_in_case_are_refused():
    target = mcu.TARGETS["cortex-m4"]
    io = {"inputs": [([1], "float32")], "outputs": [([1], "float32")]}
    with pytest.raises(ValueError, match=r"tasks \['Digits', 'digits'\] differ only in case"):
        firmware_files(target, {"digits": io, "Digits": io})
