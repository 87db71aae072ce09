"""The MetaSchedule JSON database a build tunes into and applies from."""

from __future__ import annotations

import json
import os

import tvm.s_tir.meta_schedule as ms

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
DATABASE_ENV = "WVIRT_TUNING_DB"


def default_database_folder(target: str | dict) -> str:
    """Where a target's tuning database lives unless a build names one: `$WVIRT_TUNING_DB`, or
    `~/.cache/tvm_weightvirt/tuning/<target kind>-<cpu or arch>` (schedules tuned for one CPU
    or GPU model are the ones to reuse on it)."""
    if os.environ.get(DATABASE_ENV):
        return os.environ[DATABASE_ENV]
    import tvm

    target = tvm.target.Target(target)
    model = target.attrs.get("mcpu") or target.attrs.get("arch") or "generic"
    triple = target.attrs.get("mtriple")  # another CPU architecture: schedules of its own
    name = f"{target.kind.name}-{triple}-{model}" if triple else f"{target.kind.name}-{model}"
    return os.path.join(os.path.expanduser("~/.cache/tvm_weightvirt/tuning"), name)


def default_database(target: str | dict) -> str | None:
    """The default folder (see `default_database_folder`) when it holds tuning records."""
    folder = default_database_folder(target)
    return folder if database_bytes(folder) else None


def open_database(directory: str) -> ms.database.JSONDatabase:
    """The JSON database in `directory` (created if missing); a file that is not MetaSchedule's
    JSON lines raises ValueError naming it."""
    os.makedirs(directory, exist_ok=True)
    for name in DATABASE_FILES:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as err:
                        raise ValueError(
                            f"tuning database '{path}' is corrupt: line {number} is not JSON "
                            f"({err}); delete the folder to tune again"
                        ) from err
                    if not isinstance(row, list):
                        raise ValueError(
                            f"tuning database '{path}' is corrupt: line {number} is not a "
                            "MetaSchedule record; delete the folder to tune again"
                        )
    try:
        return ms.database.JSONDatabase(work_dir=directory)
    except Exception as err:  # TVM raises its own error types from C++
        raise ValueError(
            f"tuning database '{directory}' is corrupt: MetaSchedule cannot read it ({err}); "
            "delete the folder to tune again"
        ) from err


def database_bytes(directory: str) -> int:
    paths = [os.path.join(directory, name) for name in DATABASE_FILES]
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p))
