"""Context-switch benchmark: packed (materialize, fused) vs. reload vs. resident, one run."""

from __future__ import annotations

from benchmarks._common import run
from tvm_weightvirt.apps.bench import format_switch_table, switch_benchmark

if __name__ == "__main__":
    run(__doc__, switch_benchmark, format_switch_table)
