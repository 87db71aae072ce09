"""The README's shell examples run as written, in order, in a new folder: each ```sh block is
one bash script (`set -e`). Skipped, as the README says: the `make` block, lines that train the
suite (covered by `make demo` and the benchmarks) and the cuda build where nvcc is missing."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _runnable_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    scripts = []
    for block in blocks:
        commands = re.split(r"(?<!\\)\n", block.strip())  # continuation lines stay together
        if commands[0].startswith("make "):
            continue
        kept = [
            c
            for c in commands
            if "trains the suite" not in c
            and not ("--target cuda" in c and shutil.which("nvcc") is None)
        ]
        scripts.append("set -e\n" + "\n".join(kept) + "\n")
    return scripts


def test_readme_has_the_examples_it_promises():
    scripts = _runnable_blocks()
    commands = " ".join(scripts)
    assert len(scripts) == 2
    for command in ["examples", "pack", "inspect", "build", "run"]:
        assert f"wvirt {command} " in commands


@pytest.mark.slow
def test_readme_shell_examples_run_as_written(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for script in _runnable_blocks():
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{script}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert "Traceback" not in done.stderr
    for made in ["my.wvpack", "plain.wvpack", "report.png", "build/library.json", "outputs"]:
        assert (tmp_path / made).exists(), made
    assert (tmp_path / "models" / "suite.wvpack").exists()
