"""Context-switch benchmark: packed (materialize, fused) vs. reload vs. resident, one run."""

from __future__ import annotations

import time

from benchmarks._common import parse_args, write_json
from tvm_weightvirt.apps.bench import format_switch_table, switch_benchmark


def main() -> None:
    args = parse_args(__doc__)
    started = time.time()
    numbers = switch_benchmark(quick=args.quick)
    print(format_switch_table(numbers))
    write_json(args.json, numbers, started)


if __name__ == "__main__":
    main()
