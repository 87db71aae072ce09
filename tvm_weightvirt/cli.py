"""`wvirt`: pack models into a .wvpack, inspect it, run tasks from it, run the demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

from .manifest import PACK_OPTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wvirt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    pack = sub.add_parser(
        "pack",
        help="pack models with their data (Fisher, matching, retraining) into a .wvpack",
        description="wvirt pack NAME=MODEL.onnx|.pt2 ... --data NAME=FILE.npz ... -o OUT, or "
        "wvirt pack MANIFEST.toml -o OUT, or wvirt pack --suite mnist,digits -o OUT. npz keys: "
        "x_train, y_train, x_val, y_val, x_test, y_test (y and val/test optional).",
    )
    pack.add_argument(
        "models", nargs="*", help="NAME=MODEL (.onnx or .pt2 from torch.export.save), or a .toml"
    )
    pack.add_argument(
        "--data", action="append", default=[], metavar="NAME=FILE.npz", help="a task's data"
    )
    pack.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="NAME=OBJECTIVE",
        help="classification, regression or distill (default: classification with labels, "
        "distill without)",
    )
    pack.add_argument(
        "--suite", help="comma-separated suite tasks, e.g. mnist,digits (or 'five', 'ten')"
    )
    pack.add_argument("-o", "--output", required=True)
    for key, (kind, default, choices, text) in PACK_OPTIONS.items():
        flag = "--" + key.replace("_", "-")
        shown = f"{text} (default: {default})" if default not in (None, False) else text
        if kind is bool:
            pack.add_argument(flag, action="store_true", default=None, help=text)
        else:
            pack.add_argument(flag, type=kind, default=None, choices=choices, help=shown)

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
    _log_to_stderr()
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


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a note is emitted (callers may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: it flushes the old one, maybe closed
        super().emit(record)


def _log_to_stderr() -> None:
    """The library's notes (e.g. splits held out of train) on stderr, once per process."""
    logger = logging.getLogger("tvm_weightvirt")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("note: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _pack(args) -> int:
    from .artifact import load_wvpack, save_wvpack
    from .pipeline import format_report
    from .plan import PagePlan

    spec = _pack_spec(args)
    if args.suite:
        from . import suite

        named = {"five": suite.FIVE_TASKS, "ten": suite.TEN_TASKS}
        suite_tasks = suite.load_suite(named.get(args.suite) or args.suite.split(","))
        tasks, data = suite.packable(suite_tasks)
    else:
        tasks = [_load_model(name, path) for name, path in spec.models.items()]
        for t in tasks:
            print(f"intake {t.name}: {t.n_weights} weights")
        data = _load_data(spec)
    if spec.option("lossless"):
        plan = PagePlan.lossless(tasks, page_size=spec.option("page_size"))
        size = save_wvpack(args.output, plan, tasks)
        print(plan.summary())
    else:
        from .packing import pack

        resume = spec.option("resume")
        result = pack(tasks, data, _pack_config(spec), resume=resume and load_wvpack(resume).plan)
        size = save_wvpack(args.output, result.plan, tasks, result.report)
        print(result.plan.summary())
        print(format_report(result.report))
    print(f"wrote {args.output} ({size} B)")
    return 0


def _pack_spec(args):
    """Models, data and options from the command line, or a manifest plus command-line flags
    (which win)."""
    from .manifest import PackSpec, check_objective, read_manifest

    if len(args.models) == 1 and args.models[0].endswith(".toml"):
        spec = read_manifest(args.models[0])
    else:
        spec = PackSpec()
        for entry in args.models:
            name, _, path = entry.rpartition("=")
            spec.models[name or os.path.splitext(os.path.basename(path))[0]] = path
    if bool(spec.models) == bool(args.suite):
        raise ValueError("give models (NAME=MODEL, or a .toml manifest) or --suite, not both")
    for flag, table in (("--data", spec.data), ("--objective", spec.objectives)):
        for entry in getattr(args, flag[2:]):
            name, sep, value = entry.partition("=")
            if not sep or not name or not value:
                raise ValueError(f"{flag} {entry!r}: expected NAME=VALUE")
            table[name] = value
    for name, objective in spec.objectives.items():
        check_objective(objective, f"--objective {name}")
    for key in PACK_OPTIONS:
        if getattr(args, key) is not None:
            spec.options[key] = getattr(args, key)
    if spec.option("lossless"):
        given = [
            f"--{k.replace('_', '-')}" for k in spec.options if k not in ("lossless", "page_size")
        ]
        given += ["--data"] * bool(spec.data) + ["--objective"] * bool(spec.objectives)
        if given or args.suite:
            raise ValueError(
                f"a lossless plan shares nothing and trains nothing: drop {given or ['--suite']}"
            )
    if args.suite and (spec.data or spec.objectives):
        raise ValueError("--suite brings its own data: drop --data and --objective")
    return spec


def _load_model(name: str, path: str):
    from .task import Task

    if path.endswith(".onnx"):
        return Task.from_onnx(path, name=name)
    if path.endswith(".pt2"):
        return Task.from_pt2(path, name=name)
    raise ValueError(
        f"task '{name}': '{path}' is neither an .onnx nor a .pt2 (torch.export.save) model"
    )


def _load_data(spec) -> dict:
    from .data import TaskData

    unknown = sorted((set(spec.data) | set(spec.objectives)) - set(spec.models))
    if unknown:
        raise ValueError(
            f"--data/--objective for {unknown}, which are not models (models: {list(spec.models)})"
        )
    data, problems = {}, []
    for name, path in spec.data.items():
        try:
            data[name] = TaskData.from_npz(path, objective=spec.objectives.get(name))
        except ValueError as err:
            problems.append(f"task '{name}': {err}")
    if problems:  # every unreadable file at once
        raise ValueError("\n".join(problems))
    without = sorted(set(spec.objectives) - set(spec.data))
    if without:
        raise ValueError(f"--objective for {without}, which have no --data")
    return data


def _pack_config(spec):
    from .optimize import OptimizeConfig
    from .pipeline import PackConfig
    from .separation import SeparationConfig, parse_bytes

    option = spec.option
    # any separation option asks for separation (none of them is ignored)
    separating = ("separate", "l1_budget", "l2_budget", "target_accuracy", "tpr", "margin")
    separate = any(spec.options.get(key) not in (None, False) for key in separating)
    separation = (
        SeparationConfig(
            option("tpr"),
            option("margin"),
            parse_bytes(option("l1_budget")) if option("l1_budget") else None,
            parse_bytes(option("l2_budget")) if option("l2_budget") else None,
            option("target_accuracy"),
        )
        if separate
        else None
    )
    return PackConfig(
        page_size=option("page_size"),
        pool_pages=option("pool_pages"),
        match=option("match"),
        init=option("init"),
        share_within_task=option("share_within_task"),
        fisher_samples=option("fisher_samples"),
        separation=separation,
        smartdeal=option("smartdeal"),
        optimize=OptimizeConfig(
            rounds=option("rounds"),
            iterations=option("iterations"),
            lam=option("lam"),
            seed=option("seed"),
        ),
        seed=option("seed"),
    )


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
        from .pipeline import format_report

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
