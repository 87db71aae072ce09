"""`wvirt tune`: a .wvpack's kernels into the target's tuning database."""

from __future__ import annotations

from ...abi import MODES
from .common import (
    BUILD_DEFAULTS,
    compile_target,
    pack_with_graphs,
    print_tuning,
    refuse,
    tuning_flags,
)


def add_parser(command) -> None:
    parser = command(
        "tune",
        help="tune a .wvpack's kernels into the target's tuning database once; later builds "
        "for the target apply it",
        description="MetaSchedule tuning of every kernel the database lacks. A kernel keeps its "
        "default schedule unless a tuned one is 10 % faster. The database: --tuning-db, else "
        "$WVIRT_TUNING_DB, else ~/.cache/tvm_weightvirt/tuning/<target>-<cpu or arch>.",
    )
    parser.add_argument("pack", help="a .wvpack from `wvirt pack`")
    parser.add_argument(
        "--target", choices=["llvm", "cuda"], default="llvm", help="what builds will target"
    )
    parser.add_argument("--arch", help="cuda: the GPU architecture (default: sm_87)")
    parser.add_argument("--mode", choices=MODES, help="the mode builds use (default: materialize)")
    parser.add_argument("--trials", type=int, default=64, help="candidates measured per kernel")
    tuning_flags(parser)


def run(args) -> int:
    import tvm

    from ...compile.compiler import lower
    from ...compile.tuning import TuningOptions, tune_and_apply

    if args.trials < 1:
        raise ValueError(f"--trials {args.trials}: tuning measures at least 1 candidate")
    refuse(args, "--target llvm", arch=args.target != "cuda")
    target, _ = compile_target(args.target, args.arch)
    options = TuningOptions.from_flags(
        args.trials, args.tuning_db, args.rpc_tracker, args.rpc_key, target
    )
    pack = pack_with_graphs(args.pack)
    mode = args.mode or BUILD_DEFAULTS["mode"]
    mod = lower(pack.tasks, pack.plan, mode=mode)
    _, _, report = tune_and_apply(mod, tvm.target.Target(target), options)
    print_tuning(vars(report), options.database)
    print(f"`wvirt build --target {args.target}` now applies it (--no-tuning-db: it does not)")
    return 0
