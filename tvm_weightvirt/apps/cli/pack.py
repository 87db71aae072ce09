"""`wvirt pack`: models and their data (Fisher, matching, retraining) into a .wvpack."""

from __future__ import annotations

import os
import sys

from ..manifest import PACK_OPTIONS
from .common import check_output_file, is_wvpack


def add_parser(command) -> None:
    parser = command(
        "pack",
        help="pack models with their data (Fisher, matching, retraining) into a .wvpack",
        description="wvirt pack NAME=MODEL.onnx|.pt2 ... --data NAME=FILE.npz ... -o OUT, or "
        "wvirt pack MANIFEST.toml -o OUT, or wvirt pack --suite mnist,digits -o OUT. npz keys: "
        "x_train, y_train, x_val, y_val, x_test, y_test (y and val/test optional). Every "
        "option but --lossless, --page-size, --page-aligned and --kernel-layout needs data (or "
        "--suite).",
    )
    parser.add_argument(
        "models", nargs="*", help="NAME=MODEL (.onnx or .pt2 from torch.export.save), or a .toml"
    )
    parser.add_argument(
        "--data", action="append", default=[], metavar="NAME=FILE.npz", help="a task's data"
    )
    parser.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="NAME=OBJECTIVE",
        help="classification, regression or distill (default: classification with labels, "
        "distill without)",
    )
    parser.add_argument(
        "--output-kind",
        action="append",
        default=[],
        metavar="NAME:OUTPUT=KIND",
        help="what a model's output holds: logits, probs or values (default: probs after a "
        "softmax or sigmoid, logits for a model of one [N, C] output, values otherwise)",
    )
    parser.add_argument(
        "--output-weight",
        action="append",
        default=[],
        metavar="NAME:OUTPUT=W",
        help="an output's weight in the loss of a model of several outputs (default 1; 0: "
        "not trained on)",
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=1x3x32x32",
        help="static shape of an ONNX model's input whose dimensions are symbolic (a symbolic "
        "batch alone becomes 1); NAME: the task's name or the model's input name",
    )
    parser.add_argument(
        "--suite", help="comma-separated suite tasks, e.g. mnist,digits (or 'five', 'ten')"
    )
    parser.add_argument("-o", "--output", required=True, help="the .wvpack to write")
    parser.add_argument("--force", action="store_true", help="overwrite -o even if not a .wvpack")
    parser.add_argument(
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
            parser.add_argument(flag, action="store_true", default=None, help=text)
        else:
            parser.add_argument(flag, type=kind, default=None, choices=choices, help=shown)


def run(args) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch_under_torchrun(args.argv, args.nproc)
    from ...algorithms.distributed import init_from_environment
    from ...algorithms.report import format_report
    from ...frontend.artifact import load_wvpack, save_wvpack
    from ...frontend.task import Task
    from ...plan import PagePlan

    spec = _pack_spec(args)
    inputs = [*spec.models.values(), *spec.data.values(), spec.option("resume")]
    inputs += [m for m in args.models if m.endswith(".toml")]
    check_output_file(args.output, inputs, args.force, ".wvpack", is_wvpack)
    # the options are checked before any model is read or suite baseline trained
    config = None if spec.option("lossless") else _pack_config(spec)
    if args.suite:
        from .. import suite

        named = {"five": suite.FIVE_TASKS, "ten": suite.TEN_TASKS}
        suite_tasks = suite.load_suite(named.get(args.suite) or args.suite.split(","))
        tasks, data = suite.packable(suite_tasks)
    else:
        shapes = _input_shapes(args.input_shape, spec.models)
        tasks, problems = [], []
        for name, path in spec.models.items():  # every model that fails intake, at once
            try:
                tasks.append(Task.from_file(path, name, shapes.get(name)))
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
        resume = spec.option("resume")
        if spec.option("explore"):
            result = _explore(spec, tasks, data, config)
        else:
            from ...frontend.packing import pack

            result = pack(tasks, data, config, resume=resume and load_wvpack(resume).plan)
        if rank != 0:  # every process holds the same plan
            return 0
        size = save_wvpack(args.output, result.plan, tasks, result.report)
        print(result.plan.summary())
        print(format_report(result.report))
    print(f"wrote {args.output} ({size} B)")
    return 0


def _explore(spec, tasks, data, config):
    """The smallest of the --explore pool sizes that meets the target, its trade printed."""
    from ...frontend.pool_search import explore_pool_sizes

    exploration = explore_pool_sizes(
        tasks,
        data,
        _fractions(spec),
        config,
        max_error=spec.option("max_error"),
        min_agreement=spec.option("min_agreement"),
    )
    print(exploration.table())
    if exploration.chosen is None:
        raise ValueError(
            "no pool size of --explore meets the target on validation (table above): try "
            "larger fractions, or a looser --max-error / --min-agreement"
        )
    chosen = exploration.chosen.report
    print(f"chosen: {chosen['pool_pages']} pool pages ({chosen['ratio_bytes']:.2f}x bytes)")
    chosen["explore"] = exploration.rows
    return exploration.chosen


def _fractions(spec) -> list[float]:
    text = spec.option("explore")
    try:
        fractions = [float(f) for f in text.split(",")]
    except ValueError:
        fractions = []
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(
            f"{spec.source('explore')} {text!r}: expected fractions of the pages in (0, 1], "
            "e.g. 0.75,0.5,0.35"
        )
    return fractions


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
    from ..manifest import PackSpec, check_objective, read_manifest

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
    for flag, table, kind in (
        ("--output-kind", spec.outputs, str),
        ("--output-weight", spec.output_weights, float),
    ):
        for entry in getattr(args, flag[2:].replace("-", "_")):
            target, sep, value = entry.partition("=")
            name, colon, output = target.partition(":")
            if not sep or not colon or not name or not output or not value:
                raise ValueError(f"{flag} {entry!r}: expected NAME:OUTPUT=VALUE")
            try:
                table.setdefault(name, {})[output] = kind(value)
            except ValueError:
                raise ValueError(f"{flag} {entry!r}: {value!r} is not a number") from None
    for key in PACK_OPTIONS:
        if getattr(args, key) is not None:
            spec.set_option(key, getattr(args, key), f"--{key.replace('_', '-')}")
    targets = [spec.source(k) for k in ("max_error", "min_agreement") if k in spec.options]
    if spec.option("explore"):
        _fractions(spec)
        if not targets:
            raise ValueError(
                f"{spec.source('explore')} keeps the smallest pool that meets a target: give "
                "--max-error or --min-agreement"
            )
        taken = [spec.source(k) for k in ("pool_pages", "l1_budget", "resume") if k in spec.options]
        if taken:
            raise ValueError(f"{spec.source('explore')} sets the pool size: drop {taken}")
    elif targets:
        raise ValueError(f"{', '.join(targets)} are targets of --explore: give it, or drop them")
    for key, low in (("rounds", 0), ("iterations", 1), ("page_size", 1), ("pool_pages", 1)):
        value = spec.options.get(key)
        if value is not None and value < low:
            raise ValueError(f"{spec.source(key)} {value}: must be at least {low}")
    if spec.option("lossless"):
        layout = ("lossless", "page_size", "page_aligned", "kernel_layout")
        given = [spec.source(k) for k in spec.options if k not in layout]
        given += ["--data"] * bool(spec.data) + ["--objective"] * bool(spec.objectives)
        given += ["--output-kind"] * bool(spec.outputs)
        given += ["--output-weight"] * bool(spec.output_weights)
        if given or args.suite:
            raise ValueError(
                f"a lossless plan shares nothing and trains nothing: drop {given or ['--suite']}"
            )
    if args.suite and (spec.data or spec.objectives or spec.outputs or spec.output_weights):
        raise ValueError(
            "--suite brings its own data: drop --data, --objective, --output-kind and "
            "--output-weight"
        )
    return spec


def _input_shapes(entries: list[str], models: dict[str, str]) -> dict[str, list[int]]:
    """--input-shape NAME=1x3x32x32 -> {task: [1, 3, 32, 32]}; NAME is a task's name or the
    input name of one ONNX model."""
    onnx_models = {n: p for n, p in models.items() if p.endswith(".onnx")}
    shapes = {}
    for entry in entries:
        name, sep, dims = entry.partition("=")
        task = name if name in onnx_models else _task_of_input(name, onnx_models) if sep else None
        if task is None:
            raise ValueError(
                f"--input-shape {entry!r}: expected NAME=1x3x32x32, NAME one of the ONNX "
                f"models {list(onnx_models)} or its input's name"
            )
        try:
            shapes[task] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise ValueError(f"--input-shape {entry!r}: dimensions must be integers") from None
    return shapes


def _task_of_input(input_name: str, onnx_models: dict[str, str]) -> str | None:
    """The one task whose ONNX model has an input named `input_name`, else None."""
    from ...frontend.task import onnx_input_names

    tasks = [n for n, p in onnx_models.items() if input_name in onnx_input_names(p)]
    if len(tasks) > 1:
        raise ValueError(
            f"--input-shape {input_name}=...: models {tasks} all have an input of that name; "
            "name the task instead"
        )
    return tasks[0] if tasks else None


def _load_data(spec) -> dict:
    from ...algorithms.data import TaskData

    per_task = {
        "--data": spec.data,
        "--objective": spec.objectives,
        "--output-kind": spec.outputs,
        "--output-weight": spec.output_weights,
    }
    for flag, table in per_task.items():
        unknown = sorted(set(table) - set(spec.models))
        if unknown:
            raise ValueError(
                f"{flag} for {unknown}, which are not models (models: {list(spec.models)})"
            )
    data, problems = {}, []
    for name, path in spec.data.items():
        try:
            data[name] = TaskData.from_npz(
                path,
                objective=spec.objectives.get(name),
                outputs=spec.outputs.get(name),
                output_weights=spec.output_weights.get(name),
            )
        except ValueError as err:
            problems.append(f"task '{name}': {err}")
    if problems:  # every unreadable file at once
        raise ValueError("\n".join(problems))
    for flag, table in list(per_task.items())[1:]:
        without = sorted(set(table) - set(spec.data))
        if without:
            raise ValueError(f"{flag} for {without}, which have no --data")
    return data


def _pack_config(spec):
    from ...algorithms.optimize import OptimizeConfig
    from ...algorithms.pipeline import PackConfig
    from ...algorithms.separation import BYTE_RULES, SeparationConfig, parse_bytes

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
            lr=option("lr"),
            distill_temperature=option("distill_temperature"),
            seed=option("seed"),
        ),
        seed=option("seed"),
    )
