"""The .wvpack artifact: safetensors tensors (pool, page tables, exclusive pages, task graphs)
plus a JSON manifest, validated on load. No pickle anywhere."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import safetensors.numpy
from safetensors import safe_open

from ..coded_pages import BASIS_DTYPE, CodedPages, CodeFormat
from ..layout import PageLayout
from ..plan import PAGE_TABLE_DTYPE, STORED_PAGE_TABLE_DTYPES, PagePlan, TaskPages

FORMAT = "wvpack"
FORMAT_VERSION = 5  # 5: SmartDeal bases float16
# 4: coded exclusive pages (`exclusive_codes.<task>`, `exclusive_bases.<task>`); 3: SmartDeal
# codes bit-packed (`code_format`); 2: int8 codes, the manifest and its digest in one metadata
# entry; 1: the digest in a second entry. Before 5, bases were float32: such a file loads where
# every basis value is a float16, and is refused (pack again) where decoding would change.
READS_VERSIONS = (1, 2, 3, 4, 5)
# page tables: uint16 where the plan's ids fit (`PagePlan.page_table_dtype`; files written
# before 2026-12-01 hold int32 tables, which every version reads)


class ArtifactError(ValueError):
    """A .wvpack file that is missing, corrupt, or inconsistent with itself."""


@dataclass
class WvPack:
    """What a .wvpack holds: the page plan and, when saved with them, the task graphs."""

    plan: PagePlan
    tasks: list  # list[Task]; empty when the pack was saved without graphs
    report: dict | None = None  # what packing measured (accuracies, bytes), when it was saved


def save_wvpack(
    path: str | os.PathLike,
    plan: PagePlan,
    tasks: Sequence = (),
    report: dict | None = None,
) -> int:
    """Write `plan` (and the Relax graphs of `tasks`, so the pack can be rebuilt, and the
    packing `report`) to `path` atomically (a write killed midway leaves the old file, and
    a `.<name>.*.tmp` beside it); returns the file size in bytes. A plan or report holding NaN
    or inf is refused before anything is written."""
    non_finite = _non_finite_parts(plan, report)
    if non_finite:
        raise ArtifactError(f"'{os.fspath(path)}' not written: " + "; ".join(non_finite))
    if plan.coded is None:
        tensors: dict[str, np.ndarray] = {"pool": plan.pool}
    else:  # SmartDeal pages: what is stored is packed codes and bases, the pool their decoding
        tensors = {"pool_codes": plan.coded.packed, "pool_bases": plan.coded.bases}
    manifest_tasks = []
    graph_of = {t.name: t for t in tasks}
    unknown = sorted(set(graph_of) - set(plan.tasks))
    if unknown:
        raise ValueError(f"tasks {unknown} are not in the page plan")
    for name, task_pages in plan.tasks.items():
        tensors[f"page_table.{name}"] = plan.stored_page_table(name)
        if task_pages.coded is not None and task_pages.n_exclusive_pages:
            tensors[f"exclusive_codes.{name}"] = task_pages.coded.packed
            tensors[f"exclusive_bases.{name}"] = task_pages.coded.bases
        elif task_pages.n_exclusive_pages:
            tensors[f"exclusive.{name}"] = task_pages.exclusive_pages
        entry = {
            "name": name,
            "layout": task_pages.layout.to_json(),
            "align_elems": task_pages.layout.align_elems,
            "n_pages": task_pages.layout.n_pages,
            "n_exclusive_pages": task_pages.n_exclusive_pages,
        }
        if name in graph_of:
            import tvm  # the graphs are Relax IR; the plan alone needs no TVM

            graph_json = tvm.ir.save_json(graph_of[name].mod).encode()
            tensors[f"graph.{name}"] = np.frombuffer(graph_json, np.uint8)
        manifest_tasks.append(entry)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "page_size": plan.page_size,
        "n_pool_pages": plan.n_pool_pages,
        "code_format": asdict(plan.coded.format) if plan.coded is not None else None,
        "tasks": manifest_tasks,
        "report": report,
        "tensors": {
            key: {"shape": list(t.shape), "dtype": str(t.dtype), "sha256": _sha256(t)}
            for key, t in tensors.items()
        },
    }
    manifest_json = json.dumps(manifest)
    # One metadata entry: safetensors writes several in a varying order, and the same pack must
    # be the same bytes.
    envelope = {"sha256": _sha256_text(manifest_json), "manifest": manifest_json}
    metadata = {"wvpack": json.dumps(envelope)}
    blob = safetensors.numpy.save(
        {k: np.ascontiguousarray(t) for k, t in tensors.items()}, metadata
    )
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArtifactError(f"'{path}' not written: folder '{folder}' does not exist")
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: a fresh file; mode 0o666 less the umask, as open() would create the target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(blob)


def load_wvpack(path: str | os.PathLike, graphs: bool = True) -> WvPack:
    """Read and validate a .wvpack: format and version, manifest checksum, every tensor's
    shape, dtype and sha256, page ids in range, and each graph against its layout.

    `graphs=False` leaves the task graphs unread (`tasks` empty): what a device running a
    built library needs, without TVM's compiler."""
    path = os.fspath(path)
    where = f"'{path}'"
    if os.path.isdir(path):
        raise ArtifactError(f"{where} is a folder (a `wvirt build` output?), not a .wvpack file")
    if not os.path.isfile(path):
        raise ArtifactError(f"{where}: no such file")
    # Step 1. The container and the manifest.
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise ArtifactError(f"{where}: not a readable safetensors file ({err})") from err
    if "wvpack" not in metadata:
        raise ArtifactError(f"{where}: no wvpack manifest in the file's metadata")
    manifest_json, digest = _manifest_and_digest(metadata)
    if manifest_json is None or _sha256_text(manifest_json) != digest:
        raise ArtifactError(f"{where}: manifest checksum mismatch (the header is corrupt)")
    manifest = json.loads(manifest_json)
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("version") not in READS_VERSIONS:
        raise ArtifactError(
            f"{where}: format version {manifest.get('version')!r} is not supported "
            f"(this tvm-weightvirt reads versions {', '.join(map(str, READS_VERSIONS))})"
        )
    # Step 2. Every tensor as the manifest declares it.
    declared = manifest["tensors"]
    if set(declared) != set(tensors):
        raise ArtifactError(
            f"{where}: tensors {sorted(tensors)} do not match the manifest's {sorted(declared)}"
        )
    for key, spec in declared.items():
        t = tensors[key]
        if list(t.shape) != spec["shape"] or str(t.dtype) != spec["dtype"]:
            raise ArtifactError(
                f"{where}: tensor '{key}' is {list(t.shape)} {t.dtype}, "
                f"the manifest says {spec['shape']} {spec['dtype']}"
            )
        if _sha256(t) != spec["sha256"]:
            raise ArtifactError(f"{where}: tensor '{key}' fails its sha256 check (corrupt data)")
    # Step 3. The plan, which checks page ids and table lengths against the layouts.
    page_size = manifest["page_size"]
    task_pages = {}
    for entry in manifest["tasks"]:
        name = entry["name"]
        try:
            layout = PageLayout.from_json(entry["layout"], page_size, entry["align_elems"])
        except Exception as err:
            raise ArtifactError(f"{where}: task '{name}': bad layout ({err})") from err
        if layout.n_pages != entry["n_pages"]:
            raise ArtifactError(
                f"{where}: task '{name}': layout needs {layout.n_pages} pages, "
                f"the manifest says {entry['n_pages']}"
            )
        table = tensors[f"page_table.{name}"]
        if table.dtype not in STORED_PAGE_TABLE_DTYPES:
            raise ArtifactError(
                f"{where}: task '{name}': page table is {table.dtype}, not one of "
                f"{', '.join(map(str, STORED_PAGE_TABLE_DTYPES))}"
            )
        table = table.astype(PAGE_TABLE_DTYPE)
        if f"exclusive_codes.{name}" in tensors:
            try:
                coded = _coded_pages(tensors, f"exclusive_{{}}.{name}", manifest, page_size)
            except ValueError as err:
                raise ArtifactError(f"{where}: task '{name}': exclusive pages: {err}") from err
            task_pages[name] = TaskPages(layout, table, coded=coded)
        else:
            task_pages[name] = TaskPages(layout, table, tensors.get(f"exclusive.{name}"))
    pool_key = "pool" if "pool" in tensors else "pool_codes"
    if pool_key not in tensors:
        raise ArtifactError(f"{where}: no pool (neither 'pool' nor 'pool_codes')")
    if tensors[pool_key].shape[0] != manifest["n_pool_pages"]:
        raise ArtifactError(
            f"{where}: pool has {tensors[pool_key].shape[0]} pages, "
            f"the manifest says {manifest['n_pool_pages']}"
        )
    try:
        if pool_key == "pool":
            plan = PagePlan(page_size, tensors["pool"], task_pages)
        else:
            coded = _coded_pages(tensors, "pool_{}", manifest, page_size)
            plan = PagePlan.from_coded(page_size, coded, task_pages)
    except ValueError as err:
        raise ArtifactError(f"{where}: {err}") from err
    non_finite = _non_finite_parts(plan, manifest.get("report"))
    if non_finite:
        raise ArtifactError(f"{where}: " + "; ".join(non_finite))
    # Step 4. The task graphs, whose weights are read back through the plan.
    tasks = []
    for name in plan.tasks if graphs else ():
        if f"graph.{name}" in tensors:
            tasks.append(_task_from_graph(where, name, tensors[f"graph.{name}"], plan))
    return WvPack(plan, tasks, manifest.get("report"))


def _non_finite_parts(plan: PagePlan, report: dict | None) -> list[str]:
    """What of a pack holds NaN or inf, one line each: task weights, pool pages, report keys."""
    return plan.non_finite() + [f"report {key} is {v}" for key, v in _non_finite(report)]


def _non_finite(value, key: str = "") -> list[tuple[str, float]]:
    """The NaN and inf numbers in a JSON-like `value`, with their keys (`tasks.mnist.accuracy`)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(key, value)]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return []
    return [bad for k, v in items for bad in _non_finite(v, f"{key}.{k}" if key else str(k))]


def _task_from_graph(where: str, name: str, graph: np.ndarray, plan: PagePlan):
    import tvm

    from .task import Task

    try:
        mod = tvm.ir.load_json(graph.tobytes().decode())
        return Task(name, mod, plan.read(name))
    except Exception as err:
        raise ArtifactError(
            f"{where}: task '{name}': graph does not match its layout ({err})"
        ) from err


def _manifest_and_digest(metadata: dict) -> tuple[str | None, str | None]:
    """The manifest's JSON and its recorded sha256 (format 2: one entry; 1: two entries)."""
    if "wvpack_sha256" in metadata:
        return metadata["wvpack"], metadata["wvpack_sha256"]
    try:
        envelope = json.loads(metadata["wvpack"])
        return envelope["manifest"], envelope["sha256"]
    except (ValueError, KeyError, TypeError):
        return None, None


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _coded_pages(tensors: dict, key: str, manifest: dict, page_size: int) -> CodedPages:
    """SmartDeal pages stored as the tensors `key.format("codes")` and `key.format("bases")`:
    codes bit-packed in the manifest's `code_format`, or (files written before codes were
    packed) int8, one byte each; bases float16 (float32 before format 5)."""
    codes, bases = tensors[key.format("codes")], tensors.get(key.format("bases"))
    if bases is None:
        raise ValueError(f"codes '{key.format('codes')}' without bases '{key.format('bases')}'")
    if bases.dtype == np.float32:  # a file before format 5: loads where float16 holds them
        if not np.array_equal(bases.astype(BASIS_DTYPE), bases):
            raise ValueError(
                f"bases '{key.format('bases')}' are float32 values that float16 cannot hold "
                f"exactly (a .wvpack written before format 5, when bases were float32): pack "
                f"the models again"
            )
        bases = bases.astype(BASIS_DTYPE)
    if manifest.get("code_format") is None:
        if codes.dtype != np.int8:
            raise ValueError(f"codes are {codes.dtype} without a code format (int8 expected)")
        return CodedPages(codes, bases)
    code_format = CodeFormat(**manifest["code_format"])
    return CodedPages(code_format.unpack(codes, page_size), bases, code_format)
