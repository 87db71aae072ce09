"""`wvirt`: pack models into a .wvpack, inspect it, build and run it, write example models, run
the demo."""

# One module per verb, each with its `add_parser(command)` and `run(args)`; what they share is
# in `common`.

from __future__ import annotations

import argparse
import sys

from ...progress import log_to_stderr
from . import bench, build, demo, examples, inspect, pack, run, tune
from .common import HelpWithDefaults

VERBS = {
    "pack": pack,
    "inspect": inspect,
    "build": build,
    "tune": tune,
    "run": run,
    "bench": bench,
    "examples": examples,
    "demo": demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wvirt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=HelpWithDefaults, **kwargs)

    for verb in VERBS.values():
        verb.add_parser(command)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    log_to_stderr("wvirt: ")
    try:
        return VERBS[args.command].run(args)
    except ValueError as err:  # the user's input: say what is wrong, no traceback
        print(f"wvirt {args.command}: error: {err}", file=sys.stderr)
        return 2
