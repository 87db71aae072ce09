"""`wvirt run`: a task sequence from a .wvpack, a library or a Cortex-M project."""

from __future__ import annotations

import os
import sys

import numpy as np

from ...abi import MODES
from .common import RUN_DEFAULTS, is_mcu_project, pack_with_graphs, refuse, task_list, with_defaults


def add_parser(command) -> None:
    parser = command(
        "run",
        help="run a task sequence from a .wvpack (built for llvm, or "
        "with --library from `wvirt build`), or a cortex-m project",
    )
    parser.add_argument("pack", help="a .wvpack, or a `wvirt build --target cortex-m*` folder")
    parser.add_argument(
        "--qemu", action="store_true", help="cortex-m folder: run on QEMU (else a host build)"
    )
    parser.add_argument(
        "--timeout", type=float, help="cortex-m folder: seconds per run (default: 60)"
    )
    parser.add_argument("--library", help="a `wvirt build` folder to run instead of building")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="--library: where to run it (default: the device kind it was built for)",
    )
    parser.add_argument("--tasks", required=True, help="comma-separated, e.g. har,digits,har")
    parser.add_argument(
        "--inputs",
        action="append",
        default=[],
        metavar="TASK=FILE.npy",
        help="a task's input (its first input; default: seeded random inputs)",
    )
    parser.add_argument(
        "--save-outputs", metavar="DIR", help="write request i's outputs to DIR/i_TASK_k.npy"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help=".wvpack without --library: how to build it (default: materialize)",
    )
    parser.add_argument(
        "--mapped",
        action="store_true",
        help="map each task's pages into a virtual range of its own (CPU, Linux, materialize "
        "mode, a page size that is a multiple of the OS page: 1024 weights for 4 KiB); a "
        "switch picks the range, and moves no weight bytes for a plan packed with "
        "--kernel-layout",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument(
        "--policy",
        choices=["fifo", "group"],
        help=".wvpack: serve the sequence in order, or grouped by task (bounded wait) "
        "(default: fifo)",
    )
    parser.add_argument(
        "--max-wait",
        type=int,
        help="--policy group: most later requests that may overtake a request (default: 8)",
    )


def run(args) -> int:
    mcu = os.path.isdir(args.pack) and is_mcu_project(args.pack)  # a .wvpack is a file
    where = "a cortex-m project" if mcu else "a .wvpack"
    refuse(
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
    refuse(args, "--library (its mode was fixed by `wvirt build`)", mode=bool(args.library))
    refuse(args, "a .wvpack without --library (it is built for llvm)", device=not args.library)
    option = with_defaults(args, RUN_DEFAULTS)
    if option["policy"] != "group" and args.max_wait is not None:
        raise ValueError("--max-wait applies to --policy group")
    sequence = task_list(args.tasks)
    if mcu:
        return _run_mcu(args, sequence, option["timeout"])
    import tvm

    from tvm_weightvirt.runtime import MultitaskRuntime

    if args.library:  # a device runs a built folder: TVM's runtime is enough, no task graphs
        from ...compile.library import Library
        from ...frontend.artifact import load_wvpack

        library = Library.load(args.library)
        plan = load_wvpack(args.pack, graphs=False).plan
        _check_mappable(args, plan)
        input_types = {n: s.inputs for n, s in library.tasks.items()}
    else:
        from ...compile.compiler import build, lower

        pack = pack_with_graphs(args.pack)
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
    from ...targets.mcu import (
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
