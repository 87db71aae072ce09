"""What the verbs of `wvirt` share: help that shows defaults, refusing flags that cannot apply,
checking and writing outputs whole, reading task lists and tuning flags."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil

# Defaults of flags that only some targets or inputs take: None in argparse (so a flag given
# where it cannot apply is refused), resolved here.
BUILD_DEFAULTS = {"arch": "sm_87", "mode": "materialize", "tune": 0}
RUN_DEFAULTS = {"mode": "materialize", "policy": "fifo", "max_wait": 8, "timeout": 60.0}


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's default in its help (flags whose default depends on the target say so
    in their text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def refuse(args, where: str, **flags: bool) -> None:
    """Refuse each flag given where it cannot apply (flags[name] True)."""
    given = [
        f"--{k.replace('_', '-')}"
        for k, cannot in flags.items()
        if cannot and getattr(args, k) not in (None, False)
    ]
    if given:
        raise ValueError(f"{', '.join(given)} cannot apply to {where}")


def with_defaults(args, defaults: dict) -> dict:
    """The value of each flag in `defaults`: given on the command line, else its default."""
    return {k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()}


def is_mcu_project(path: str) -> bool:
    from ...targets.mcu import is_project  # TVM's compiler: only where the folder is one

    return is_project(path)


def is_wvpack(path: str) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            return "wvpack" in (f.metadata() or {})
    except Exception:
        return False


def is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def check_output_file(path: str, inputs: list, force: bool, kind: str, is_ours) -> None:
    """An output file: not one of the inputs, in a folder that exists, and replacing only a
    file of its own kind unless `force`."""
    out = os.path.realpath(path)
    if any(p and os.path.exists(p) and os.path.realpath(p) == out for p in inputs):
        raise ValueError(f"'{path}' is one of the inputs: writing it would destroy that input")
    if os.path.isdir(out):
        raise ValueError(f"'{path}' is a folder: give the {kind} to write")
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"'{path}': folder '{os.path.dirname(path) or '.'}' does not exist")
    if os.path.exists(out) and not force and not is_ours(out):
        raise ValueError(f"'{path}' exists and is not a {kind}: --force replaces it")


def check_output_folder(path: str, inputs: list, force: bool) -> None:
    """A build folder: not an input, its parent exists, and replacing only a `wvirt build`
    folder (or an empty one) unless `force`."""
    from ...targets.mcu import is_project

    out = os.path.realpath(path)
    if any(p and os.path.realpath(p) == out for p in inputs) or os.path.isfile(out):
        raise ValueError(f"'{path}' is a file: -o takes a folder to build into")
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"'{path}': folder '{os.path.dirname(path) or '.'}' does not exist")
    ours = os.path.isfile(os.path.join(out, "library.json")) or is_project(out)
    if os.path.isdir(out) and os.listdir(out) and not ours and not force:
        raise ValueError(
            f"'{path}' holds files that are not a `wvirt build` folder: --force replaces it"
        )


@contextlib.contextmanager
def written_whole(path: str, folder: bool = False):
    """Yield a temporary name beside `path`; on success it replaces `path`, on failure it goes."""
    parent, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(parent, f".{base}.{os.getpid()}.tmp")
    try:
        if folder:
            os.makedirs(tmp)
        else:
            tmp += os.path.splitext(base)[1]  # matplotlib picks the format by extension
        yield tmp
        if folder and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def pack_with_graphs(path: str):
    from ...frontend.artifact import load_wvpack

    pack = load_wvpack(path)
    if not pack.tasks:
        raise ValueError(
            f"'{path}' holds no task graphs: save it with its tasks to build or run it"
        )
    return pack


def task_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"--tasks {text!r}: expected task names separated by commas, e.g. a,b,a")
    return names


def tuning_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tuning-db",
        help="MetaSchedule database folder: tuning records go here, builds apply it (default: "
        "$WVIRT_TUNING_DB, else ~/.cache/tvm_weightvirt/tuning/<target>-<cpu or arch>)",
    )
    parser.add_argument(
        "--rpc-tracker", metavar="HOST:PORT", help="measure tuning trials on a device via RPC"
    )
    parser.add_argument("--rpc-key", help="the device key registered with --rpc-tracker")


# --target names of CPU targets: TVM's target for each
CPU_TARGETS = {
    "llvm": {"kind": "llvm"},
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"},  # a Jetson's or any arm64 CPU
}


def compile_target(kind: str, arch: str | None) -> tuple[dict, list[str] | None]:
    """TVM's target for --target llvm|aarch64|cuda (cuda: the lowest of --arch's), and the
    archs."""
    if kind != "cuda":
        return dict(CPU_TARGETS[kind]), None
    from ...compile.library import check_archs, sm_number

    archs = check_archs((arch or BUILD_DEFAULTS["arch"]).split(","))
    return {"kind": "cuda", "arch": min(archs, key=sm_number)}, archs


def print_tuning(t: dict, database: str) -> None:
    print(
        f"tuning: {t['trials']} trials in {t['seconds']:.0f} s; of {t['kernels']} kernels, "
        f"{t['scheduled']} run a tuned schedule, {t['kept_default']} kept the default one "
        f"(not beaten by 10 %); database {database} ({t['database_bytes']} B)"
    )
