"""What every benchmark shares: its command line and its JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

from tvm_weightvirt.progress import log_to_stderr


def parse_args(description: str, options: dict[str, dict] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (minutes)")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    for flag, kwargs in (options or {}).items():
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def write_json(path: str | None, numbers: dict, started: float) -> None:
    numbers["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    numbers["wall_seconds"] = time.time() - started
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(numbers, f, indent=2)
        print(f"wrote {path}")


def run(
    description: str,
    measure: Callable[..., dict],
    table=None,
    figure=None,
    options: dict[str, dict] | None = None,
) -> None:
    """A benchmark's main: `--quick` and `--json PATH` from the command line; `measure(quick)`
    gives the numbers (printed by `table` when given), written as JSON with the machine and the
    wall time; `figure(numbers, png_path)`, when given, draws them next to the JSON. `options`:
    the benchmark's own flags (argparse keyword arguments by flag), passed to `measure` as
    keyword arguments."""
    args = parse_args(description, options)
    log_to_stderr()  # progress lines of packing and tuning
    started = time.time()
    own = {k: v for k, v in vars(args).items() if k not in ("quick", "json")}
    numbers = measure(args.quick, **own)
    if table is not None:
        print(table(numbers))
    if figure is not None and args.json:
        numbers["png"] = os.path.splitext(args.json)[0] + ".png"
        os.makedirs(os.path.dirname(os.path.abspath(numbers["png"])), exist_ok=True)
        figure(numbers, numbers["png"])
        print(f"wrote {numbers['png']}")
    write_json(args.json, numbers, started)
