"""Pack the 5-task suite at NWV's pool size (pages of the largest task) and at 1/2 and 1/4 of
it; compare pool initialisations. Accuracy in percent on each task's test split."""

from __future__ import annotations

from benchmarks._common import run
from tvm_weightvirt.algorithms.optimize import OptimizeConfig
from tvm_weightvirt.algorithms.pipeline import PackConfig
from tvm_weightvirt.algorithms.report import format_report
from tvm_weightvirt.apps import suite
from tvm_weightvirt.frontend.packing import pack


def measure(quick: bool) -> dict:
    rounds, iterations = (2, 100) if quick else (4, 300)
    budget = OptimizeConfig(rounds=rounds, iterations=iterations)
    tasks = suite.load_suite(suite.FIVE_TASKS)
    largest = max(-(-t.n_params // 100) for t in tasks)
    runs = {}
    for label, pool_pages, init in [
        ("nwv", largest, "fisher_mean"),
        ("half", largest // 2, "fisher_mean"),
        ("quarter", largest // 4, "fisher_mean"),
        ("nwv_init_random", largest, "random"),
        ("nwv_init_weights", largest, "weights"),
    ]:
        config = PackConfig(
            pool_pages=pool_pages,
            init=init,
            share_within_task=pool_pages < largest,
            optimize=budget,
        )
        result = pack(*suite.packable(tasks), config)
        print(f"\n== {label}: pool {pool_pages} pages, init {init}\n{format_report(result.report)}")
        runs[label] = result
    nwv = runs["nwv"].report
    numbers = {
        "ratio_bytes": nwv["ratio_bytes"],
        "ratio_count": nwv["ratio_count"],
        "mean_delta_pp": nwv["mean_delta_pp"],
        "worst_delta_pp": nwv["worst_delta_pp"],
        "bytes_separate": nwv["bytes_separate"],
        "bytes_packed": nwv["bytes_packed"],
        "tasks": {
            n: {"params": r["params"], "acc_separate": r["separate"], "acc_packed": r["packed"]}
            for n, r in nwv["tasks"].items()
        },
        "optimize": vars(budget),
        "runs": {
            label: {
                k: r.report[k]
                for k in (
                    "pool_pages",
                    "init",
                    "ratio_bytes",
                    "ratio_count",
                    "mean_delta_pp",
                    "worst_delta_pp",
                )
            }
            | {"acc_packed": {n: t["packed"] for n, t in r.report["tasks"].items()}}
            for label, r in runs.items()
        },
    }
    real = suite.mnist_real_test(next(t for t in tasks if t.name == "mnist"), runs["nwv"].plan)
    if real is not None:
        numbers["mnist_real_test"] = real
        print(f"\nreal MNIST test set: {real}")
    return numbers


if __name__ == "__main__":
    run(__doc__, measure)
