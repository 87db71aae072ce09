"""`wvirt inspect`: pages, tasks, bytes and metrics of a .wvpack."""

from __future__ import annotations

import os

from .common import check_output_file, is_png, written_whole


def add_parser(command) -> None:
    parser = command("inspect", help="pages, tasks, bytes and metrics of a .wvpack")
    parser.add_argument("pack", help="a .wvpack")
    parser.add_argument("--png", help="write the report figure to this PNG file")
    parser.add_argument("--force", action="store_true", help="overwrite --png if it is not a PNG")


def run(args) -> int:
    from ...frontend.artifact import load_wvpack

    pack = load_wvpack(args.pack)
    print(pack.plan.summary())
    print(f"  graphs: {[t.name for t in pack.tasks] or 'none (plan only)'}")
    print(
        f"  file {os.path.getsize(args.pack)} B: pool {pack.plan.pool_bytes} B, page tables "
        f"{pack.plan.page_table_bytes} B ({pack.plan.page_table_dtype}), "
        f"exclusive {pack.plan.exclusive_bytes} B"
    )
    if pack.report:
        from ...algorithms.report import format_report

        print(format_report(pack.report))
    if args.png:
        from ..figures import plot_pack

        check_output_file(args.png, [args.pack], args.force, "PNG file", is_png)
        with written_whole(args.png) as tmp:
            plot_pack(pack.plan, pack.report, tmp)
        print(f"wrote {args.png}")
    return 0
