"""`wvirt demo`: pack the 5-task suite, build it, switch between tasks."""

from __future__ import annotations


def add_parser(command) -> None:
    parser = command("demo", help="pack the 5-task suite, build it, switch between tasks")
    parser.add_argument("--out", default="out/demo", help="folder for the .wvpack")


def run(args) -> int:
    from ..demo import run_demo

    run_demo(out_dir=args.out)
    return 0
