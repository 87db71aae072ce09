"""Benchmarks: `python -m benchmarks.<name> [--quick] --json PATH` (ratios measured in one run)."""
