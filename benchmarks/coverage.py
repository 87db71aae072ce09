"""The coverage matrix: 13 common architectures in miniature (`apps/architectures.py`), each
through the torch path and an ONNX export, checked for intake, lossless build and twin,
sharing (a packed pair that retrains) and Cortex-M (QEMU == host). `--quick`: intake and
lossless only (no packing, no QEMU)."""

from __future__ import annotations

import time

from benchmarks._common import run
from tvm_weightvirt.apps import coverage
from tvm_weightvirt.apps.architectures import ARCHITECTURES


def measure(quick: bool) -> dict:
    columns = coverage.COLUMNS[:2] if quick else coverage.COLUMNS
    matrix, seconds = {}, {}
    for path in coverage.PATHS:
        for name in ARCHITECTURES:
            started = time.time()
            matrix.setdefault(path, {})[name] = coverage.check(name, path, columns)
            seconds.setdefault(path, {})[name] = round(time.time() - started, 1)
            print(f"{path:5s} {name:20s} {matrix[path][name]}", flush=True)
    rows = [row for by_name in matrix.values() for row in by_name.values()]
    return {
        "columns": list(columns),
        "matrix": matrix,
        "seconds": seconds,
        "rows_ok": sum(all(v == coverage.OK for v in row.values()) for row in rows),
        "rows": len(rows),
    }


def table(numbers: dict) -> str:
    columns = numbers["columns"]
    lines = [
        "| architecture | "
        + " | ".join(f"{p} {c}" for p in coverage.PATHS for c in columns)
        + " |",
        "|---|" + "---|" * (len(coverage.PATHS) * len(columns)),
    ]
    for name in ARCHITECTURES:
        cells = [
            "✓" if numbers["matrix"][p][name][c] == coverage.OK else "✗"
            for p in coverage.PATHS
            for c in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    failures = [
        f"{p} {name} {c}: {v}"
        for p in coverage.PATHS
        for name, row in numbers["matrix"][p].items()
        for c, v in row.items()
        if v != coverage.OK
    ]
    lines.append(f"{numbers['rows_ok']} of {numbers['rows']} rows pass every column")
    return "\n".join(lines + failures)


if __name__ == "__main__":
    run(__doc__, measure, table)
