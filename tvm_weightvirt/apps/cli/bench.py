"""`wvirt bench`: the switch benchmark, packed vs. reload vs. resident."""

from __future__ import annotations


def add_parser(command) -> None:
    parser = command("bench", help="switch benchmark: packed vs. reload vs. resident")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 100 requests")
    parser.add_argument("--json", help="write the numbers to this JSON file")


def run(args) -> int:
    import json

    from ..bench import format_switch_table, switch_benchmark

    numbers = switch_benchmark(quick=args.quick)
    print(format_switch_table(numbers))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
    return 0
