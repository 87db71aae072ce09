"""`wvirt`: pack models into a .wvpack, inspect it, build and run it, write example models, run
the demo."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys

import numpy as np

from ..abi import MODES
from ..progress import log_to_stderr
from .manifest import PACK_OPTIONS

# Defaults of flags that only some targets or inputs take: None in argparse (so a flag given
# where it cannot apply is refused), resolved here.
BUILD_DEFAULTS = {"arch": "sm_87", "mode": "materialize", "tune": 0}
RUN_DEFAULTS = {"mode": "materialize", "policy": "fifo", "max_wait": 8, "timeout": 60.0}


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's default in its help (flags whose default depends on the target say so
    in their text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wvirt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=_HelpWithDefaults, **kwargs)

    pack = command(
        "pack",
        help="pack models with their data (Fisher, matching, retraining) into a .wvpack",
        description="wvirt pack NAME=MODEL.onnx|.pt2 ... --data NAME=FILE.npz ... -o OUT, or "
        "wvirt pack MANIFEST.toml -o OUT, or wvirt pack --suite mnist,digits -o OUT. npz keys: "
        "x_train, y_train, x_val, y_val, x_test, y_test (y and val/test optional). Every "
        "option but --lossless, --page-size, --page-aligned and --kernel-layout needs data (or "
        "--suite).",
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
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=1x3x32x32",
        help="static shape of an ONNX model's input whose dimensions are symbolic (a symbolic "
        "batch alone becomes 1)",
    )
    pack.add_argument(
        "--suite", help="comma-separated suite tasks, e.g. mnist,digits (or 'five', 'ten')"
    )
    pack.add_argument("-o", "--output", required=True, help="the .wvpack to write")
    pack.add_argument("--force", action="store_true", help="overwrite -o even if not a .wvpack")
    pack.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="retrain data-parallel in this many processes on this machine (torchrun, gloo or "
        "NCCL); across machines, run `torchrun ... -m tvm_weightvirt.apps.cli pack ...`",
    )
    for key, (kind, default, choices, text) in PACK_OPTIONS.items():
        flag = "--" + key.replace("_", "-")
        shown = f"{text} (default: {default})" if default not in (None, False) else text
        if kind is bool:
            pack.add_argument(flag, action="store_true", default=None, help=text)
        else:
            pack.add_argument(flag, type=kind, default=None, choices=choices, help=shown)

    inspect = command("inspect", help="pages, tasks, bytes and metrics of a .wvpack")
    inspect.add_argument("pack", help="a .wvpack")
    inspect.add_argument("--png", help="write the report figure to this PNG file")
    inspect.add_argument("--force", action="store_true", help="overwrite --png if it is not a PNG")

    build = command("build", help="compile a .wvpack's tasks into one library folder")
    build.add_argument("pack", help="a .wvpack saved with its task graphs")
    build.add_argument(
        "--target",
        choices=["llvm", "cuda", "cortex-m4", "cortex-m7"],
        default="llvm",
        help="cortex-m*: write a C project (pool in RAM, exclusive pages in flash) to -o",
    )
    build.add_argument(
        "--zero-copy",
        choices=["ram", "flash"],
        help="cortex-m*: kernels read each weight from its pages in place, the pages in RAM or "
        "in flash; a switch gathers nothing (needs a pack made with --page-aligned)",
    )
    build.add_argument(
        "--arch",
        help="cuda: GPU architectures whose machine code the library carries, comma-separated "
        "(e.g. sm_87,sm_90); kernels are generated for the lowest (default: sm_87, Jetson Orin)",
    )
    build.add_argument(
        "--mode",
        choices=MODES,
        help="llvm/cuda: gather pages at a switch, or in every call (default: materialize)",
    )
    build.add_argument(
        "-o", "--output", required=True, help="folder for library.so/.json (or the C project)"
    )
    build.add_argument("--force", action="store_true", help="replace -o even if not ours")
    build.add_argument(
        "--tune",
        type=int,
        metavar="TRIALS",
        help="llvm/cuda: MetaSchedule (XGBoost) trials per kernel not yet in the tuning "
        "database (default: 0)",
    )
    _tuning_flags(build)
    build.add_argument(
        "--no-tuning-db",
        action="store_true",
        help="default schedules only, even where the target's default tuning database exists",
    )

    tune = command(
        "tune",
        help="tune a .wvpack's kernels into the target's tuning database once; later builds "
        "for the target apply it",
        description="MetaSchedule tuning of every kernel the database lacks. A kernel keeps its "
        "default schedule unless a tuned one is 10 % faster. The database: --tuning-db, else "
        "$WVIRT_TUNING_DB, else ~/.cache/tvm_weightvirt/tuning/<target>-<cpu or arch>.",
    )
    tune.add_argument("pack", help="a .wvpack from `wvirt pack`")
    tune.add_argument(
        "--target", choices=["llvm", "cuda"], default="llvm", help="what builds will target"
    )
    tune.add_argument("--arch", help="cuda: the GPU architecture (default: sm_87)")
    tune.add_argument("--mode", choices=MODES, help="the mode builds use (default: materialize)")
    tune.add_argument("--trials", type=int, default=64, help="candidates measured per kernel")
    _tuning_flags(tune)

    run = command(
        "run",
        help="run a task sequence from a .wvpack (built for llvm, or "
        "with --library from `wvirt build`), or a cortex-m project",
    )
    run.add_argument("pack", help="a .wvpack, or a `wvirt build --target cortex-m*` folder")
    run.add_argument(
        "--qemu", action="store_true", help="cortex-m folder: run on QEMU (else a host build)"
    )
    run.add_argument("--timeout", type=float, help="cortex-m folder: seconds per run (default: 60)")
    run.add_argument("--library", help="a `wvirt build` folder to run instead of building")
    run.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="--library: where to run it (default: the device kind it was built for)",
    )
    run.add_argument("--tasks", required=True, help="comma-separated, e.g. har,digits,har")
    run.add_argument(
        "--inputs",
        action="append",
        default=[],
        metavar="TASK=FILE.npy",
        help="a task's input (its first input; default: seeded random inputs)",
    )
    run.add_argument(
        "--save-outputs", metavar="DIR", help="write request i's outputs to DIR/i_TASK_k.npy"
    )
    run.add_argument(
        "--mode",
        choices=MODES,
        help=".wvpack without --library: how to build it (default: materialize)",
    )
    run.add_argument(
        "--mapped",
        action="store_true",
        help="map each task's pages into a virtual range of its own (CPU, Linux, materialize "
        "mode, a page size that is a multiple of the OS page: 1024 weights for 4 KiB); a "
        "switch picks the range, and moves no weight bytes for a plan packed with "
        "--kernel-layout",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    run.add_argument(
        "--policy",
        choices=["fifo", "group"],
        help=".wvpack: serve the sequence in order, or grouped by task (bounded wait) "
        "(default: fifo)",
    )
    run.add_argument(
        "--max-wait",
        type=int,
        help="--policy group: most later requests that may overtake a request (default: 8)",
    )

    bench = command("bench", help="switch benchmark: packed vs. reload vs. resident")
    bench.add_argument("--quick", action="store_true", help="CI-sized: 100 requests")
    bench.add_argument("--json", help="write the numbers to this JSON file")

    examples = command(
        "examples",
        help="write three small trained models with their data and a manifest, to try the "
        "commands on (sensors.onnx, gestures.onnx, friedman.pt2, *.npz, suite.toml, "
        "sensors_input.npy)",
    )
    examples.add_argument("folder", help="a new (or empty) folder")

    demo = command("demo", help="pack the 5-task suite, build it, switch between tasks")
    demo.add_argument("--out", default="out/demo", help="folder for the .wvpack")

    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    log_to_stderr("wvirt: ")
    try:
        return {
            "pack": _pack,
            "inspect": _inspect,
            "build": _build,
            "tune": _tune,
            "run": _run,
            "bench": _bench,
            "examples": _examples,
            "demo": _demo,
        }[args.command](args)
    except ValueError as err:  # the user's input: say what is wrong, no traceback
        print(f"wvirt {args.command}: error: {err}", file=sys.stderr)
        return 2


def _pack(args) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch_under_torchrun(args.argv, args.nproc)
    from ..algorithms.distributed import init_from_environment
    from ..algorithms.pipeline import format_report
    from ..frontend.artifact import load_wvpack, save_wvpack
    from ..plan import PagePlan

    spec = _pack_spec(args)
    inputs = [*spec.models.values(), *spec.data.values(), spec.option("resume")]
    inputs += [m for m in args.models if m.endswith(".toml")]
    _check_output_file(args.output, inputs, args.force, ".wvpack", _is_wvpack)
    # the options are checked before any model is read or suite baseline trained
    config = None if spec.option("lossless") else _pack_config(spec)
    if args.suite:
        from . import suite

        named = {"five": suite.FIVE_TASKS, "ten": suite.TEN_TASKS}
        suite_tasks = suite.load_suite(named.get(args.suite) or args.suite.split(","))
        tasks, data = suite.packable(suite_tasks)
    else:
        shapes = _input_shapes(args.input_shape, spec.models)
        tasks, problems = [], []
        for name, path in spec.models.items():  # every model that fails intake, at once
            try:
                tasks.append(_load_model(name, path, shapes.get(name)))
                print(f"intake {name}: {tasks[-1].n_weights} weights")
            except ValueError as err:
                problems.append(str(err))
        if problems:
            raise ValueError("\n".join(problems))
        data = _load_data(spec)
    if spec.option("kernel_layout"):
        tasks = [t.in_kernel_layout() for t in tasks]
    rank, _ = init_from_environment()  # under torchrun; the first process writes the result
    if spec.option("lossless"):
        plan = PagePlan.lossless(
            tasks, page_size=spec.option("page_size"), page_aligned=spec.option("page_aligned")
        )
        if rank != 0:
            return 0
        size = save_wvpack(args.output, plan, tasks)
        print(plan.summary())
    else:
        from ..frontend.packing import pack

        resume = spec.option("resume")
        result = pack(tasks, data, config, resume=resume and load_wvpack(resume).plan)
        if rank != 0:  # every process holds the same plan
            return 0
        size = save_wvpack(args.output, result.plan, tasks, result.report)
        print(result.plan.summary())
        print(format_report(result.report))
    print(f"wrote {args.output} ({size} B)")
    return 0


def _relaunch_under_torchrun(argv: list[str], nproc: int) -> int:
    """The `wvirt pack` command `argv` again, in `nproc` processes on this machine (torchrun's
    standalone rendezvous)."""
    import subprocess

    i = next(i for i, a in enumerate(argv) if a.startswith("--nproc"))
    argv = argv[:i] + argv[i + (1 if "=" in argv[i] else 2) :]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(nproc), "-m", "tvm_weightvirt.apps.cli", *argv]
    return subprocess.call(command)


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
            spec.set_option(key, getattr(args, key), f"--{key.replace('_', '-')}")
    for key, low in (("rounds", 0), ("iterations", 1), ("page_size", 1), ("pool_pages", 1)):
        value = spec.options.get(key)
        if value is not None and value < low:
            raise ValueError(f"{spec.source(key)} {value}: must be at least {low}")
    if spec.option("lossless"):
        layout = ("lossless", "page_size", "page_aligned", "kernel_layout")
        given = [spec.source(k) for k in spec.options if k not in layout]
        given += ["--data"] * bool(spec.data) + ["--objective"] * bool(spec.objectives)
        if given or args.suite:
            raise ValueError(
                f"a lossless plan shares nothing and trains nothing: drop {given or ['--suite']}"
            )
    if args.suite and (spec.data or spec.objectives):
        raise ValueError("--suite brings its own data: drop --data and --objective")
    return spec


def _input_shapes(entries: list[str], models: dict[str, str]) -> dict[str, dict]:
    """--input-shape NAME=1x3x32x32 -> {task: {its ONNX input: [1, 3, 32, 32]}}."""
    import onnx

    shapes = {}
    for entry in entries:
        name, sep, dims = entry.partition("=")
        if not sep or name not in models or not models[name].endswith(".onnx"):
            raise ValueError(
                f"--input-shape {entry!r}: expected NAME=1x3x32x32 for one of the ONNX models "
                f"{[n for n, p in models.items() if p.endswith('.onnx')]}"
            )
        try:
            shape = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise ValueError(f"--input-shape {entry!r}: dimensions must be integers") from None
        graph = onnx.load(models[name], load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise ValueError(f"--input-shape {entry!r}: the model has inputs {inputs}, not one")
        shapes[name] = {inputs[0]: shape}
    return shapes


def _load_model(name: str, path: str, shape_dict: dict | None = None):
    from ..frontend.task import Task

    if os.path.isdir(path):
        raise ValueError(f"task '{name}': '{path}' is a folder, not a model file")
    if path.endswith(".onnx"):
        return Task.from_onnx(path, name=name, shape_dict=shape_dict)
    if path.endswith(".pt2"):
        return Task.from_pt2(path, name=name)
    raise ValueError(
        f"task '{name}': '{path}' is neither an .onnx nor a .pt2 (torch.export.save) model"
    )


def _load_data(spec) -> dict:
    from ..algorithms.data import TaskData

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
    from ..algorithms.optimize import OptimizeConfig
    from ..algorithms.pipeline import PackConfig
    from ..algorithms.separation import BYTE_RULES, SeparationConfig, parse_bytes

    option = spec.option
    # any separation option asks for separation (none of them is ignored)
    separating = (
        "separate",
        "l1_budget",
        "l2_budget",
        "target_accuracy",
        "tpr",
        "margin",
        "separation_rule",
        "refine_rounds",
        "refine_by",
    )
    separate = any(spec.options.get(key) not in (None, False) for key in separating)
    rule = option("separation_rule")
    if rule in BYTE_RULES:
        ws_rule = [
            spec.source(k) for k in ("tpr", "margin", "target_accuracy") if k in spec.options
        ]
        if ws_rule:
            raise ValueError(
                f"{', '.join(ws_rule)} set WS's tpr rule; --separation-rule {rule} spends "
                "--l2-budget instead: drop them"
            )
    if option("refine_rounds") and rule not in BYTE_RULES:
        raise ValueError(
            f"{spec.source('refine_rounds')} refines the choice of --separation-rule bytes or "
            f"bytes_even (not {rule}): use one with --l2-budget, or drop the refinement"
        )
    if "refine_by" in spec.options and not option("refine_rounds"):
        raise ValueError(
            f"{spec.source('refine_by')} says how --refine-rounds moves the level-2 bytes: "
            "give --refine-rounds too, or drop it"
        )
    separation = (
        SeparationConfig(
            option("tpr"),
            option("margin"),
            parse_bytes(option("l1_budget")) if option("l1_budget") else None,
            parse_bytes(option("l2_budget")) if option("l2_budget") else None,
            option("target_accuracy"),
            option("separation_rule"),
            option("refine_rounds"),
            option("refine_by"),
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
        fisher_batch=option("fisher_batch"),
        fisher_split=option("fisher_split"),
        separation=separation,
        smartdeal=option("smartdeal"),
        page_aligned=option("page_aligned"),
        optimize=OptimizeConfig(
            rounds=option("rounds"),
            iterations=option("iterations"),
            lam=option("lam"),
            distill_temperature=option("distill_temperature"),
            seed=option("seed"),
        ),
        seed=option("seed"),
    )


def _inspect(args) -> int:
    from ..frontend.artifact import load_wvpack

    pack = load_wvpack(args.pack)
    print(pack.plan.summary())
    print(f"  graphs: {[t.name for t in pack.tasks] or 'none (plan only)'}")
    print(
        f"  file {os.path.getsize(args.pack)} B: pool {pack.plan.pool_bytes} B, page tables "
        f"{pack.plan.page_table_bytes} B ({pack.plan.page_table_dtype}), "
        f"exclusive {pack.plan.exclusive_bytes} B"
    )
    if pack.report:
        from ..algorithms.pipeline import format_report

        print(format_report(pack.report))
    if args.png:
        from .figures import plot_pack

        _check_output_file(args.png, [args.pack], args.force, "PNG file", _is_png)
        with _written_whole(args.png) as tmp:
            plot_pack(pack.plan, pack.report, tmp)
        print(f"wrote {args.png}")
    return 0


def _pack_with_graphs(path: str):
    from ..frontend.artifact import load_wvpack

    pack = load_wvpack(path)
    if not pack.tasks:
        raise ValueError(
            f"'{path}' holds no task graphs: save it with its tasks to build or run it"
        )
    return pack


def _build(args) -> int:
    from ..compile.compiler import build, lower

    mcu = args.target.startswith("cortex-m")
    _refuse(
        args,
        "--target " + args.target,
        arch=args.target != "cuda",
        mode=mcu,
        zero_copy=not mcu,
        tune=mcu,
        tuning_db=mcu,
        rpc_tracker=mcu,
        rpc_key=mcu,
        no_tuning_db=mcu,
    )
    _refuse(args, "--no-tuning-db", tune=args.no_tuning_db, tuning_db=args.no_tuning_db)
    option = _with_defaults(args, BUILD_DEFAULTS)
    if mcu:
        tuning = None
    else:
        from ..compile.tuning import TuningOptions

        target, archs = _compile_target(args.target, option["arch"])
        tuning = TuningOptions.from_flags(
            option["tune"],
            args.tuning_db,
            args.rpc_tracker,
            args.rpc_key,
            None if args.no_tuning_db else target,
        )
    pack = _pack_with_graphs(args.pack)
    _check_output_folder(args.output, [args.pack], args.force)
    if mcu:
        from ..targets.mcu import generate_project

        with _written_whole(args.output, folder=True) as tmp:
            manifest = generate_project(
                pack.tasks,
                pack.plan,
                tmp,
                target=args.target,
                zero_copy=args.zero_copy is not None,
                pool_in=args.zero_copy or "ram",
            )
        ram, flash = (sum(manifest["data_bytes"][m].values()) for m in ("ram", "flash"))
        print(
            f"wrote a {args.target} C project for {len(pack.tasks)} tasks to {args.output} "
            f"(data: {ram} B RAM, {flash} B flash before code); run it: "
            f"wvirt run {args.output} --qemu --tasks ..."
        )
        return 0
    with _written_whole(args.output, folder=True) as tmp:
        library = build(
            lower(pack.tasks, pack.plan, mode=option["mode"]),
            target=target,
            tuning=tuning,
            archs=archs,
        )
        library.export(tmp)
    print(
        f"built {len(pack.tasks)} tasks ({option['mode']}, {args.target}) in "
        f"{library.compile_seconds:.1f} s -> {args.output}/library.so"
    )
    if library.tuning:
        _print_tuning(library.tuning, tuning.database)
    if args.target == "cuda":
        print(
            f"kernels compiled ahead of time by nvcc for {', '.join(archs)}, inside library.so: "
            "the device needs the CUDA driver and TVM's runtime, no compiler"
        )
    return 0


def _tuning_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tuning-db",
        help="MetaSchedule database folder: tuning records go here, builds apply it (default: "
        "$WVIRT_TUNING_DB, else ~/.cache/tvm_weightvirt/tuning/<target>-<cpu or arch>)",
    )
    parser.add_argument(
        "--rpc-tracker", metavar="HOST:PORT", help="measure tuning trials on a device via RPC"
    )
    parser.add_argument("--rpc-key", help="the device key registered with --rpc-tracker")


def _compile_target(kind: str, arch: str | None) -> tuple[dict, list[str] | None]:
    """TVM's target for --target llvm|cuda (cuda: the lowest of --arch's), and the archs."""
    if kind != "cuda":
        return {"kind": "llvm"}, None
    from ..compile.library import check_archs, sm_number

    archs = check_archs((arch or BUILD_DEFAULTS["arch"]).split(","))
    return {"kind": "cuda", "arch": min(archs, key=sm_number)}, archs


def _print_tuning(t: dict, database: str) -> None:
    print(
        f"tuning: {t['trials']} trials in {t['seconds']:.0f} s; of {t['kernels']} kernels, "
        f"{t['scheduled']} run a tuned schedule, {t['kept_default']} kept the default one "
        f"(not beaten by 10 %); database {database} ({t['database_bytes']} B)"
    )


def _tune(args) -> int:
    import tvm

    from ..compile.compiler import lower
    from ..compile.tuning import TuningOptions, tune_and_apply

    if args.trials < 1:
        raise ValueError(f"--trials {args.trials}: tuning measures at least 1 candidate")
    _refuse(args, "--target llvm", arch=args.target != "cuda")
    target, _ = _compile_target(args.target, args.arch)
    options = TuningOptions.from_flags(
        args.trials, args.tuning_db, args.rpc_tracker, args.rpc_key, target
    )
    pack = _pack_with_graphs(args.pack)
    mode = args.mode or BUILD_DEFAULTS["mode"]
    mod = lower(pack.tasks, pack.plan, mode=mode)
    _, _, report = tune_and_apply(mod, tvm.target.Target(target), options)
    _print_tuning(vars(report), options.database)
    print(f"`wvirt build --target {args.target}` now applies it (--no-tuning-db: it does not)")
    return 0


def _run(args) -> int:
    mcu = os.path.isdir(args.pack) and _is_mcu_project(args.pack)  # a .wvpack is a file
    where = "a cortex-m project" if mcu else "a .wvpack"
    _refuse(
        args,
        where,
        qemu=not mcu,
        timeout=not mcu,
        library=mcu,
        mode=mcu,
        policy=mcu,
        max_wait=mcu,
        device=mcu,
        mapped=mcu,
    )
    _refuse(args, "--library (its mode was fixed by `wvirt build`)", mode=bool(args.library))
    _refuse(args, "a .wvpack without --library (it is built for llvm)", device=not args.library)
    option = _with_defaults(args, RUN_DEFAULTS)
    if option["policy"] != "group" and args.max_wait is not None:
        raise ValueError("--max-wait applies to --policy group")
    sequence = _task_list(args.tasks)
    if mcu:
        return _run_mcu(args, sequence, option["timeout"])
    import tvm

    from tvm_weightvirt.runtime import MultitaskRuntime

    if args.library:  # a device runs a built folder: TVM's runtime is enough, no task graphs
        from ..compile.library import Library
        from ..frontend.artifact import load_wvpack

        library = Library.load(args.library)
        plan = load_wvpack(args.pack, graphs=False).plan
        _check_mappable(args, plan)
        input_types = {n: s.inputs for n, s in library.tasks.items()}
    else:
        from ..compile.compiler import build, lower

        pack = _pack_with_graphs(args.pack)
        plan, input_types = pack.plan, {t.name: t.input_types for t in pack.tasks}
        _check_mappable(args, plan)  # before the build
        library = build(lower(pack.tasks, plan, mode=option["mode"]), target="llvm")
        print(
            f"built {len(pack.tasks)} tasks ({option['mode']}) in {library.compile_seconds:.1f} s"
        )
    unknown = sorted(set(sequence) - set(input_types))
    if unknown:
        raise ValueError(f"tasks {unknown} are not in '{args.pack}' (has {sorted(input_types)})")
    given = _inputs(args.inputs, input_types)
    device_kind = args.device or ("cuda" if library.kind == "cuda" else "cpu")
    device = tvm.cuda() if device_kind == "cuda" else tvm.cpu()
    # exclusive pages: level 2 is the file
    runtime = MultitaskRuntime(plan, library, device, level2=args.pack, mapped=args.mapped)
    requests = _requests(sequence, input_types, given, args.seed)
    outputs = runtime.run_many(requests, policy=option["policy"], max_wait=option["max_wait"])
    _show_outputs(requests, outputs, args.save_outputs)
    c = runtime.counters
    print(
        f"{c.requests} requests, {c.switches} switches, {c.bytes_gathered} B gathered, "
        f"{c.bytes_transformed} B transformed, "
        f"{c.bytes_read_l2} B read from level 2 ({c.prefetch_hits} prefetched), "
        f"{1e3 * c.switch_seconds:.3f} ms switching, {1e3 * c.inference_seconds:.3f} ms inference"
    )
    return 0


def _check_mappable(args, plan) -> None:
    """`--mapped` on a plan whose pages this machine cannot map: say why, before any build."""
    from tvm_weightvirt.runtime.page_mapping import mapping_problems

    problems = mapping_problems(4 * plan.page_size) if args.mapped else []
    if args.mapped and args.mode == "fused":
        problems.append("it runs materialize mode's kernels: drop --mode fused")
    if problems:
        raise ValueError(f"--mapped: {'; '.join(problems)}")


def _task_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"--tasks {text!r}: expected task names separated by commas, e.g. a,b,a")
    return names


def _inputs(entries: list[str], input_types: dict[str, list]) -> dict[str, np.ndarray]:
    """--inputs TASK=FILE.npy, checked against the task's first input."""
    given = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or name not in input_types:
            raise ValueError(
                f"--inputs {entry!r}: expected TASK=FILE.npy, TASK one of {sorted(input_types)}"
            )
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as err:
            raise ValueError(f"--inputs {entry!r}: cannot read '{path}' as .npy: {err}") from err
        (shape, dtype), *rest = input_types[name]
        if rest:
            raise ValueError(f"--inputs {entry!r}: task '{name}' takes {1 + len(rest)} inputs")
        if tuple(x.shape) != tuple(shape):
            raise ValueError(
                f"--inputs {entry!r}: shape {tuple(x.shape)}, task '{name}' takes {tuple(shape)}"
            )
        given[name] = x.astype(dtype, copy=False)
    return given


def _requests(sequence, input_types, given, seed) -> list:
    rng = np.random.default_rng(seed)
    return [
        (
            name,
            [given[name]]
            if name in given
            else [rng.normal(size=s).astype(d) for s, d in input_types[name]],
        )
        for name in sequence
    ]


def _show_outputs(requests, outputs, folder: str | None) -> None:
    """Each request's outputs (values up to 8 per output), and with `folder` as .npy files."""
    if folder:
        os.makedirs(folder, exist_ok=True)
    for i, ((name, _), out) in enumerate(zip(requests, outputs)):
        shown = [
            np.array2string(o.ravel()[:8], precision=4) + ("..." if o.size > 8 else "") for o in out
        ]
        print(f"{name}: outputs {[o.shape for o in out]} {' '.join(shown)}")
        for k, o in enumerate(out if folder else []):
            np.save(os.path.join(folder, f"{i}_{name}_{k}.npy"), o)


def _run_mcu(args, sequence: list[str], timeout: float) -> int:
    from ..targets.mcu import (
        McuRunError,
        load_manifest,
        memory_report,
        run_project,
        write_requests,
    )

    manifest = load_manifest(args.pack)
    unknown = sorted(set(sequence) - set(manifest["tasks"]))
    if unknown:
        raise ValueError(
            f"tasks {unknown} are not in '{args.pack}' (has {list(manifest['tasks'])})"
        )
    input_types = {n: t["inputs"] for n, t in manifest["tasks"].items()}
    requests = _requests(sequence, input_types, _inputs(args.inputs, input_types), args.seed)
    write_requests(args.pack, requests)
    try:
        result = run_project(args.pack, host=not args.qemu, timeout=timeout)
    except McuRunError as err:  # the firmware faulted or hung: no Python traceback
        print(f"wvirt run: error: {err}", file=sys.stderr)
        return 1
    _show_outputs(requests, result.outputs, args.save_outputs)
    if args.qemu:
        for name, n in result.switch_instructions:
            print(f"switch to {name}: {n} instructions")
        for name, n in result.run_instructions:
            print(f"inference {name}: {n} instructions")
        report = memory_report(args.pack)
        print(f"app.elf: {report['ram_bytes']} B RAM, {report['flash_bytes']} B flash")
    return 0


# **** options that cannot apply, and outputs: written whole or not at all, never over an input


def _refuse(args, where: str, **flags: bool) -> None:
    """Refuse each flag given where it cannot apply (flags[name] True)."""
    given = [
        f"--{k.replace('_', '-')}"
        for k, cannot in flags.items()
        if cannot and getattr(args, k) not in (None, False)
    ]
    if given:
        raise ValueError(f"{', '.join(given)} cannot apply to {where}")


def _with_defaults(args, defaults: dict) -> dict:
    """The value of each flag in `defaults`: given on the command line, else its default."""
    return {k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()}


def _is_mcu_project(path: str) -> bool:
    from ..targets.mcu import is_project  # TVM's compiler: only where the folder is one

    return is_project(path)


def _is_wvpack(path: str) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            return "wvpack" in (f.metadata() or {})
    except Exception:
        return False


def _is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _check_output_file(path: str, inputs: list, force: bool, kind: str, is_ours) -> None:
    """An output file: not one of the inputs, in a folder that exists, and replacing only a
    file of its own kind unless `force`."""
    out = os.path.realpath(path)
    if any(p and os.path.exists(p) and os.path.realpath(p) == out for p in inputs):
        raise ValueError(f"'{path}' is one of the inputs: writing it would destroy that input")
    if os.path.isdir(out):
        raise ValueError(f"'{path}' is a folder: give the {kind} to write")
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"'{path}': folder '{os.path.dirname(path) or '.'}' does not exist")
    if os.path.exists(out) and not force and not is_ours(out):
        raise ValueError(f"'{path}' exists and is not a {kind}: --force replaces it")


def _check_output_folder(path: str, inputs: list, force: bool) -> None:
    """A build folder: not an input, its parent exists, and replacing only a `wvirt build`
    folder (or an empty one) unless `force`."""
    from ..targets.mcu import is_project

    out = os.path.realpath(path)
    if any(p and os.path.realpath(p) == out for p in inputs) or os.path.isfile(out):
        raise ValueError(f"'{path}' is a file: -o takes a folder to build into")
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"'{path}': folder '{os.path.dirname(path) or '.'}' does not exist")
    ours = os.path.isfile(os.path.join(out, "library.json")) or is_project(out)
    if os.path.isdir(out) and os.listdir(out) and not ours and not force:
        raise ValueError(
            f"'{path}' holds files that are not a `wvirt build` folder: --force replaces it"
        )


@contextlib.contextmanager
def _written_whole(path: str, folder: bool = False):
    """Yield a temporary name beside `path`; on success it replaces `path`, on failure it goes."""
    parent, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(parent, f".{base}.{os.getpid()}.tmp")
    try:
        if folder:
            os.makedirs(tmp)
        else:
            tmp += os.path.splitext(base)[1]  # matplotlib picks the format by extension
        yield tmp
        if folder and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def _bench(args) -> int:
    import json

    from .bench import format_switch_table, switch_benchmark

    numbers = switch_benchmark(quick=args.quick)
    print(format_switch_table(numbers))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
    return 0


def _examples(args) -> int:
    from .examples import write_user_models

    if os.path.isfile(args.folder) or (os.path.isdir(args.folder) and os.listdir(args.folder)):
        raise ValueError(f"'{args.folder}' exists and is not an empty folder")
    with _written_whole(args.folder, folder=True) as tmp:
        write_user_models(tmp)
        with np.load(os.path.join(tmp, "sensors.npz")) as data:
            np.save(os.path.join(tmp, "sensors_input.npy"), data["x_test"][:1])
    print(f"wrote {', '.join(sorted(os.listdir(args.folder)))} to '{args.folder}'")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
