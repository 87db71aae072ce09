"""`wvirt`: pack models into a .wvpack, inspect it, run tasks from it, run the demo."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wvirt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    pack = sub.add_parser(
        "pack",
        help="pack the suite (Fisher, matching, retraining) or ONNX "
        "models (lossless: no data to retrain with) into a .wvpack",
    )
    pack.add_argument("models", nargs="*", help="model.onnx or name=model.onnx")
    pack.add_argument(
        "--suite", help="comma-separated suite tasks, e.g. mnist,digits (or 'five', 'ten')"
    )
    pack.add_argument("-o", "--output", required=True)
    pack.add_argument("--page-size", type=int, default=100)
    pack.add_argument(
        "--pool-pages",
        type=int,
        default=None,
        help="pool size in pages (default: pages of the largest task, as NWV)",
    )
    pack.add_argument(
        "--share-within-task",
        action="store_true",
        help="allow a pool smaller than the largest task",
    )
    pack.add_argument("--match", choices=["greedy", "optimal", "random"], default="greedy")
    pack.add_argument("--init", choices=["random", "weights", "fisher_mean"], default="fisher_mean")
    pack.add_argument("--rounds", type=int, default=4, help="retraining rounds (0: none)")
    pack.add_argument("--iterations", type=int, default=300, help="per task per round")
    pack.add_argument(
        "--lam",
        type=float,
        default=None,
        help="weight of the sharing loss (default 10 as NWV, 0.1 with --separate as WS)",
    )
    pack.add_argument("--resume", help="continue retraining from this .wvpack's plan")
    pack.add_argument(
        "--separate",
        action="store_true",
        help="weight separation: critical pages exclusive in level-2 storage (WS)",
    )
    pack.add_argument(
        "--l1-budget", help="shared pool + page tables in RAM, e.g. 256KiB (sets the pool size)"
    )
    pack.add_argument("--l2-budget", help="all exclusive pages, e.g. 4MiB")
    pack.add_argument("--tpr", type=float, default=1.0, help="separation: target protection ratio")
    pack.add_argument("--margin", type=float, default=0.1, help="separation: margin")
    pack.add_argument(
        "--smartdeal",
        action="store_true",
        help="store pool pages as power-of-two codes x a 3x3 basis per page (page size: a multiple of 3)",
    )
    pack.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="separation: per-task tpr from WS's target-accuracy rule (e.g. 0.95)",
    )

    inspect = sub.add_parser("inspect", help="pages, tasks, bytes and accuracy of a .wvpack")
    inspect.add_argument("pack")
    inspect.add_argument("--png", help="write the report figure to this PNG file")

    build = sub.add_parser("build", help="compile a .wvpack's tasks into one library folder")
    build.add_argument("pack")
    build.add_argument(
        "--target",
        choices=["llvm", "cuda", "cortex-m4", "cortex-m7"],
        default="llvm",
        help="cortex-m*: write a C project (pool in RAM, exclusive pages in flash) to -o",
    )
    build.add_argument(
        "--arch", default="sm_87", help="cuda: GPU architecture (sm_87: Jetson Orin)"
    )
    build.add_argument("--mode", choices=["materialize", "fused"], default="materialize")
    build.add_argument("-o", "--output", required=True, help="folder for library.so/.json")
    build.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="TRIALS",
        help="MetaSchedule (XGBoost) trials per kernel not yet in --tuning-db",
    )
    build.add_argument(
        "--tuning-db", help="MetaSchedule database folder: tuning records go here, builds apply it"
    )
    build.add_argument(
        "--rpc-tracker", metavar="HOST:PORT", help="measure tuning trials on a device via RPC"
    )
    build.add_argument("--rpc-key", help="the device key registered with --rpc-tracker")

    run = sub.add_parser(
        "run",
        help="run a task sequence from a .wvpack (built for llvm, or "
        "with --library from `wvirt build`)",
    )
    run.add_argument("pack", help="a .wvpack, or a `wvirt build --target cortex-m*` folder")
    run.add_argument(
        "--qemu", action="store_true", help="cortex-m folder: run on QEMU (else a host build)"
    )
    run.add_argument("--timeout", type=float, default=60.0, help="cortex-m: seconds per run")
    run.add_argument("--library", help="a `wvirt build` folder to run instead of building")
    run.add_argument("--tasks", required=True, help="comma-separated, e.g. har,digits,har")
    run.add_argument("--mode", choices=["materialize", "fused"], default="materialize")
    run.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    run.add_argument(
        "--policy",
        choices=["fifo", "group"],
        default="fifo",
        help="serve the sequence in order, or grouped by task (bounded wait)",
    )
    run.add_argument(
        "--max-wait",
        type=int,
        default=8,
        help="group: most later requests that may overtake a request",
    )

    bench = sub.add_parser("bench", help="switch benchmark: packed vs. reload vs. resident")
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--json", help="write the numbers to this JSON file")

    demo = sub.add_parser("demo", help="pack the 5-task suite, build it, switch between tasks")
    demo.add_argument("--out", default="out/demo", help="folder for the .wvpack")

    args = parser.parse_args(argv)
    try:
        return {
            "pack": _pack,
            "inspect": _inspect,
            "build": _build,
            "run": _run,
            "bench": _bench,
            "demo": _demo,
        }[args.command](args)
    except ValueError as err:  # the user's input: say what is wrong, no traceback
        print(f"wvirt {args.command}: error: {err}", file=sys.stderr)
        return 2


def _pack(args) -> int:
    from .artifact import load_wvpack, save_wvpack
    from .plan import PagePlan
    from .task import Task

    if bool(args.models) == bool(args.suite):
        raise ValueError("give either ONNX models or --suite")
    if args.suite:
        from . import suite
        from .optimize import OptimizeConfig
        from .pack import PackConfig, format_report, pack_tasks
        from .separation import SeparationConfig, parse_bytes

        named = {"five": suite.FIVE_TASKS, "ten": suite.TEN_TASKS}
        names = named.get(args.suite) or args.suite.split(",")
        tasks = suite.load_suite(names)
        separate = args.separate or args.l1_budget or args.l2_budget or args.target_accuracy
        separation = (
            SeparationConfig(
                args.tpr,
                args.margin,
                parse_bytes(args.l1_budget) if args.l1_budget else None,
                parse_bytes(args.l2_budget) if args.l2_budget else None,
                args.target_accuracy,
            )
            if separate
            else None
        )
        lam = args.lam if args.lam is not None else (0.1 if separate else 10.0)
        config = PackConfig(
            page_size=args.page_size,
            pool_pages=args.pool_pages,
            match=args.match,
            init=args.init,
            share_within_task=args.share_within_task,
            separation=separation,
            smartdeal=args.smartdeal,
            optimize=OptimizeConfig(rounds=args.rounds, iterations=args.iterations, lam=lam),
        )
        resume = load_wvpack(args.resume).plan if args.resume else None
        result = pack_tasks(tasks, config, resume=resume)
        graphs = [Task.from_torch(t.model, (t.example_input(),), name=t.name) for t in tasks]
        size = save_wvpack(args.output, result.plan, graphs, result.report)
        print(format_report(result.report))
    else:
        tasks = []
        for spec in args.models:
            name, _, path = spec.rpartition("=")
            name = name or os.path.splitext(os.path.basename(path))[0]
            tasks.append(Task.from_onnx(path, name=name))
            print(f"intake {name}: {tasks[-1].n_weights} weights")
        plan = PagePlan.lossless(tasks, page_size=args.page_size)
        size = save_wvpack(args.output, plan, tasks)
        print(plan.summary())
    print(f"wrote {args.output} ({size} B)")
    return 0


def _inspect(args) -> int:
    from .artifact import load_wvpack

    pack = load_wvpack(args.pack)
    print(pack.plan.summary())
    print(f"  graphs: {[t.name for t in pack.tasks] or 'none (plan only)'}")
    print(
        f"  file {os.path.getsize(args.pack)} B: pool {pack.plan.pool_bytes} B, page tables "
        f"{pack.plan.page_table_bytes} B, exclusive {pack.plan.exclusive_bytes} B"
    )
    if pack.report:
        from .pack import format_report

        print(format_report(pack.report))
    if args.png:
        from .figures import plot_pack

        plot_pack(pack.plan, pack.report, args.png)
        print(f"wrote {args.png}")
    return 0


def _pack_with_graphs(path: str):
    from .artifact import load_wvpack

    pack = load_wvpack(path)
    if not pack.tasks:
        raise ValueError(
            f"'{path}' holds no task graphs: save it with its tasks to build or run it"
        )
    return pack


def _build(args) -> int:
    from .compiler import build, lower

    pack = _pack_with_graphs(args.pack)
    if args.target.startswith("cortex-m"):
        from .cortexm import generate_project

        manifest = generate_project(pack.tasks, pack.plan, args.output, target=args.target)
        ram, flash = (sum(manifest["data_bytes"][m].values()) for m in ("ram", "flash"))
        print(
            f"wrote a {args.target} C project for {len(pack.tasks)} tasks to {args.output} "
            f"(data: {ram} B RAM, {flash} B flash before code); run it: "
            f"wvirt run {args.output} --qemu --tasks ..."
        )
        return 0
    target = {"kind": "llvm"} if args.target == "llvm" else {"kind": "cuda", "arch": args.arch}
    library = build(
        lower(pack.tasks, pack.plan, mode=args.mode),
        target=target,
        tune=args.tune,
        tuning_db=args.tuning_db,
        rpc_tracker=args.rpc_tracker,
        rpc_key=args.rpc_key,
    )
    library.export(args.output)
    print(
        f"built {len(pack.tasks)} tasks ({args.mode}, {args.target}) in "
        f"{library.compile_seconds:.1f} s -> {args.output}/library.so"
    )
    if library.tuning:
        t = library.tuning
        print(
            f"tuning: {t['trials']} trials in {t['seconds']:.0f} s; {t['scheduled']} of "
            f"{t['kernels']} kernels scheduled from {args.tuning_db} ({t['database_bytes']} B)"
        )
    if args.target == "cuda":
        from .cuda import compile_fatbin, cuda_source

        with open(os.path.join(args.output, "kernels.cu"), "w") as f:
            f.write(cuda_source(library))
        fatbin = os.path.join(args.output, f"kernels_{args.arch}.fatbin")
        print(
            f"kernels compiled ahead of time: {fatbin} ({compile_fatbin(library, args.arch, fatbin)} B)"
        )
    return 0


def _run(args) -> int:
    from .cortexm import is_project

    if is_project(args.pack):
        return _run_mcu(args)
    from tvm_weightvirt.runtime import MultitaskRuntime

    from .compiler import build, lower

    pack = _pack_with_graphs(args.pack)
    by_name = {t.name: t for t in pack.tasks}
    sequence = [n for n in args.tasks.split(",") if n]
    unknown = sorted(set(sequence) - set(by_name))
    if unknown:
        raise ValueError(f"tasks {unknown} are not in '{args.pack}' (has {sorted(by_name)})")
    if args.library:
        from .compiler import Library

        library = Library.load(args.library)
    else:
        library = build(lower(pack.tasks, pack.plan, mode=args.mode), target="llvm")
        print(f"built {len(pack.tasks)} tasks ({args.mode}) in {library.compile_seconds:.1f} s")
    runtime = MultitaskRuntime(pack.plan, library, level2=args.pack)  # exclusive pages: the file
    rng = np.random.default_rng(args.seed)
    requests = [
        (name, [rng.normal(size=shape).astype(dtype) for shape, dtype in by_name[name].input_types])
        for name in sequence
    ]
    outputs = runtime.run_many(requests, policy=args.policy, max_wait=args.max_wait)
    for (name, _), out in zip(requests, outputs):
        print(f"{name}: outputs {[o.shape for o in out]}")
    c = runtime.counters
    print(
        f"{c.requests} requests, {c.switches} switches, {c.bytes_gathered} B gathered, "
        f"{c.bytes_read_l2} B read from level 2 ({c.prefetch_hits} prefetched), "
        f"{1e3 * c.switch_seconds:.3f} ms switching, {1e3 * c.inference_seconds:.3f} ms inference"
    )
    return 0


def _run_mcu(args) -> int:
    from .cortexm import McuRunError, load_manifest, memory_report, run_project, write_requests

    manifest = load_manifest(args.pack)
    sequence = [n for n in args.tasks.split(",") if n]
    unknown = sorted(set(sequence) - set(manifest["tasks"]))
    if unknown:
        raise ValueError(
            f"tasks {unknown} are not in '{args.pack}' (has {list(manifest['tasks'])})"
        )
    rng = np.random.default_rng(args.seed)
    requests = [
        (n, [rng.normal(size=s).astype(d) for s, d in manifest["tasks"][n]["inputs"]])
        for n in sequence
    ]
    write_requests(args.pack, requests)
    try:
        result = run_project(args.pack, host=not args.qemu, timeout=args.timeout)
    except McuRunError as err:  # the firmware faulted or hung: no Python traceback
        print(f"wvirt run: error: {err}", file=sys.stderr)
        return 1
    for (name, _), outputs in zip(requests, result.outputs):
        print(f"{name}: {[o.round(4).tolist() for o in outputs]}")
    if args.qemu:
        for name, n in result.switch_instructions:
            print(f"switch to {name}: {n} instructions")
        for name, n in result.run_instructions:
            print(f"inference {name}: {n} instructions")
        report = memory_report(args.pack)
        print(f"app.elf: {report['ram_bytes']} B RAM, {report['flash_bytes']} B flash")
    return 0


def _bench(args) -> int:
    import json

    from .bench import format_switch_table, switch_benchmark

    numbers = switch_benchmark(quick=args.quick)
    print(format_switch_table(numbers))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
