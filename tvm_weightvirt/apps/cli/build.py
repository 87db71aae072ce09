"""`wvirt build`: a .wvpack's tasks into one library folder, or a Cortex-M C project."""

from __future__ import annotations

from ...abi import MODES
from ...targets.mcu.boards import TARGETS as MCU_TARGETS
from .common import (
    BUILD_DEFAULTS,
    CPU_TARGETS,
    check_output_folder,
    compile_target,
    pack_with_graphs,
    print_tuning,
    refuse,
    tuning_flags,
    with_defaults,
    written_whole,
)


def add_parser(command) -> None:
    parser = command("build", help="compile a .wvpack's tasks into one library folder")
    parser.add_argument("pack", help="a .wvpack saved with its task graphs")
    parser.add_argument(
        "--target",
        choices=[*CPU_TARGETS, "cuda", *MCU_TARGETS],
        default="llvm",
        help="aarch64: a library for an arm64 Linux CPU (a Jetson's), linked by "
        "aarch64-linux-gnu-g++; cortex-m*: write a C project (pool in RAM, exclusive pages in "
        "flash) to -o",
    )
    parser.add_argument(
        "--zero-copy",
        choices=["ram", "flash"],
        help="cortex-m*: kernels read each weight from its pages in place, the pages in RAM or "
        "in flash; a switch gathers nothing (needs a pack made with --page-aligned)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="cortex-m*: int8 kernels, each task calibrated on the x_train of its --data (a "
        "lossless pack: int8 pages are not implemented yet, so tasks cannot share them)",
    )
    parser.add_argument(
        "--data",
        action="append",
        metavar="NAME=FILE.npz",
        help="--int8: a task's calibration samples (its x_train; a model quantized in QDQ "
        "format needs none)",
    )
    parser.add_argument(
        "--arch",
        help="cuda: GPU architectures whose machine code the library carries, comma-separated "
        "(e.g. sm_87,sm_90); kernels are generated for the lowest (default: sm_87, Jetson Orin)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="llvm/cuda: gather pages at a switch, or in every call (default: materialize)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="folder for library.so/.json (or the C project)"
    )
    parser.add_argument("--force", action="store_true", help="replace -o even if not ours")
    parser.add_argument(
        "--tune",
        type=int,
        metavar="TRIALS",
        help="llvm/cuda: MetaSchedule (XGBoost) trials per kernel not yet in the tuning "
        "database (default: 0)",
    )
    tuning_flags(parser)
    parser.add_argument(
        "--no-tuning-db",
        action="store_true",
        help="default schedules only, even where the target's default tuning database exists",
    )


def run(args) -> int:
    from ...compile.compiler import build, lower

    mcu = args.target in MCU_TARGETS
    refuse(
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
        int8=not mcu,
    )
    refuse(args, "--no-tuning-db", tune=args.no_tuning_db, tuning_db=args.no_tuning_db)
    refuse(args, "a build without --int8", data=not args.int8)
    refuse(args, "--int8 (its weights are flash constants already)", zero_copy=args.int8)
    if args.target == "aarch64" and args.tune and not args.rpc_tracker:
        raise ValueError(
            "--tune for --target aarch64 measures on the device: give --rpc-tracker (this "
            "machine cannot run aarch64 kernels)"
        )
    option = with_defaults(args, BUILD_DEFAULTS)
    if mcu:
        tuning = None
    else:
        from ...compile.tuning import TuningOptions

        target, archs = compile_target(args.target, option["arch"])
        if args.target in CPU_TARGETS:  # a cross linker that is missing: say so before compiling
            import json

            from ...compile.library import cross_compiler

            cross_compiler(json.dumps(target))
        tuning = TuningOptions.from_flags(
            option["tune"],
            args.tuning_db,
            args.rpc_tracker,
            args.rpc_key,
            None if args.no_tuning_db else target,
        )
    pack = pack_with_graphs(args.pack)
    check_output_folder(args.output, [args.pack], args.force)
    if mcu:
        from ...plan import PagePlan
        from ...targets.mcu import generate_project

        tasks, plan = pack.tasks, pack.plan
        if args.int8:
            tasks = _int8_tasks(pack, args.data or [])
            plan = PagePlan.lossless(tasks, pack.plan.page_size)  # int8 weights are constants
        with written_whole(args.output, folder=True) as tmp:
            manifest = generate_project(
                tasks,
                plan,
                tmp,
                target=args.target,
                zero_copy=args.zero_copy is not None,
                pool_in=args.zero_copy or "ram",
            )
        ram, flash = (sum(manifest["data_bytes"][m].values()) for m in ("ram", "flash"))
        print(
            f"wrote a {args.target} {'int8 ' * args.int8}C project for {len(tasks)} tasks to "
            f"{args.output} "
            f"(data: {ram} B RAM, {flash} B flash before code); run it: "
            f"wvirt run {args.output} --qemu --tasks ..."
        )
        return 0
    with written_whole(args.output, folder=True) as tmp:
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
        print_tuning(library.tuning, tuning.database)
    if args.target == "cuda":
        print(
            f"kernels compiled ahead of time by nvcc for {', '.join(archs)}, inside library.so: "
            "the device needs the CUDA driver and TVM's runtime, no compiler"
        )
    return 0


def _int8_tasks(pack, data: list[str]) -> list:
    """The pack's tasks with int8 kernels, each calibrated on the x_train of its --data file
    (a QDQ model's without one: its own ranges); refused for a pack whose tasks share pages
    (each int8 task keeps its own weights)."""
    from collections import Counter

    from ...algorithms.data import TaskData
    from ...frontend.int8 import QuantizeError, quantize_int8
    from ...frontend.task import Task

    names = [t.name for t in pack.tasks]
    reads = Counter(i for n in names for i in pack.plan.task(n).page_table.tolist())
    shared = sum(count > 1 for count in reads.values())
    if shared:
        raise ValueError(
            f"--int8 builds each task's own int8 weights (int8 pages are not implemented yet) "
            f"and this pack's tasks share {shared} pages: pack them with --lossless for int8, "
            "or build this pack as float32"
        )
    files = {}
    for entry in data:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--data {entry!r}: expected NAME=FILE.npz")
        files[name] = path
    unknown = sorted(set(files) - set(names))
    if unknown:
        raise ValueError(f"--data for {unknown}, which are not tasks of the pack ({names})")
    quantized = []
    for t in pack.tasks:  # without data, a QDQ model's own ranges (its clips) or nothing
        samples = TaskData.from_npz(files[t.name]).train.x if t.name in files else None
        task = Task(t.name, t.mod, pack.plan.read(t.name), t.output_names)
        try:
            quantized.append(quantize_int8(task, samples))
        except QuantizeError as err:
            if samples is not None or "has no range" not in str(err):
                raise
            raise ValueError(
                f"--int8 calibrates task '{t.name}' on its data: give --data "
                f"{t.name}=FILE.npz (only a model quantized in QDQ format brings its ranges)"
            ) from None
    return quantized
