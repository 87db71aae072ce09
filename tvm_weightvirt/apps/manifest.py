"""What `wvirt pack` packs, from its command line or a TOML manifest: models, data files,
objectives and the packing options (one table of options serves both)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields

from ..algorithms.configs import OptimizeConfig, PackConfig, SeparationConfig


def _default(config: type, name: str):
    """The default of field `name` of a config dataclass: the one place a default is spelled."""
    return {f.name: f.default for f in fields(config)}[name]


# option: (type, default, choices, help); the flag is --option-with-dashes, the manifest key
# is the option name in its [pack] table. Defaults of options that are config fields are read
# from the field.
PACK_OPTIONS: dict[str, tuple[type, object, tuple | None, str]] = {
    "page_size": (int, _default(PackConfig, "page_size"), None, "weights per page"),
    "pool_pages": (
        int,
        _default(PackConfig, "pool_pages"),
        None,
        "pool size in pages (default: the largest task's, as NWV)",
    ),
    "share_within_task": (
        bool,
        _default(PackConfig, "share_within_task"),
        None,
        "allow a pool smaller than the largest task",
    ),
    "match": (
        str,
        _default(PackConfig, "match"),
        ("greedy", "fast", "optimal", "random"),
        "page matching",
    ),
    "init": (
        str,
        _default(PackConfig, "init"),
        ("random", "weights", "fisher_mean"),
        "pool initialisation",
    ),
    "rounds": (int, _default(OptimizeConfig, "rounds"), None, "retraining rounds (0: none)"),
    "iterations": (
        int,
        _default(OptimizeConfig, "iterations"),
        None,
        "retraining iterations per task per round",
    ),
    "lam": (
        float,
        _default(OptimizeConfig, "lam"),
        None,
        "sharing-loss weight (default 10 as NWV; 0.1 with separation)",
    ),
    "lr": (
        float,
        _default(OptimizeConfig, "lr"),
        None,
        "retraining learning rate (Adam); pretrained models fine-tune better lower, e.g. 1e-4",
    ),
    "distill_temperature": (
        float,
        _default(OptimizeConfig, "distill_temperature"),
        None,
        "retrain each task toward its separate model's outputs on its training inputs (KL at "
        "this temperature for classifiers, e.g. 4; MSE otherwise) instead of its targets",
    ),
    "fisher_samples": (
        int,
        _default(PackConfig, "fisher_samples"),
        None,
        "samples for the Fisher (default 100; 50 with separation)",
    ),
    "fisher_batch": (
        int,
        _default(PackConfig, "fisher_batch"),
        None,
        "samples per Fisher batch (default: gradients < 256 MiB)",
    ),
    "fisher_split": (
        str,
        _default(PackConfig, "fisher_split"),
        ("train", "val"),
        "whose inputs the Fisher reads (NWV and WS: train; val: held-out inputs, where a model "
        "that fits its training split exactly is not certain of every answer; for separation, "
        "whose Fisher is normalised: NWV's grows there and outweighs the task's loss at lam 10)",
    ),
    "seed": (int, _default(PackConfig, "seed"), None, "seed of splits, matching and retraining"),
    "resume": (str, None, None, "continue retraining from this .wvpack's plan"),
    "separate": (bool, False, None, "weight separation: critical pages exclusive in level 2 (WS)"),
    "l1_budget": (str, None, None, "pool + page tables in RAM, e.g. 256KiB (sets the pool size)"),
    "l2_budget": (str, None, None, "all exclusive pages, e.g. 4MiB"),
    "tpr": (float, _default(SeparationConfig, "tpr"), None, "separation: target protection ratio"),
    "margin": (float, _default(SeparationConfig, "margin"), None, "separation: margin"),
    "target_accuracy": (
        float,
        _default(SeparationConfig, "target_accuracy"),
        None,
        "separation: per-task tpr by WS's rule (e.g. 0.95)",
    ),
    "separation_rule": (
        str,
        _default(SeparationConfig, "rule"),
        ("tpr", "bytes", "bytes_even"),
        "separation: WS's tpr/margin per task; 'bytes': spend --l2-budget on the pages "
        "with the most Fisher share per byte across tasks; 'bytes_even': spend it so every "
        "task covers the same share of its Fisher mass, as large as the budget allows",
    ),
    "refine_rounds": (
        int,
        _default(SeparationConfig, "refine_rounds"),
        None,
        "separation rules 'bytes' and 'bytes_even': pack again this often, the level-2 bytes "
        "moved by what each task's packed model lost (on its training split, or, retrained "
        "toward its separate model, how far from it on validation inputs; --refine-by); keeps "
        "the pack whose worst task lost least",
    ),
    "refine_by": (
        str,
        _default(SeparationConfig, "refine_by"),
        ("weights", "whole_task"),
        "--refine-rounds: 'weights': each task's Fisher share weighted by (1 + its loss); "
        "'whole_task': the task that lost most keeps every page exclusive (one more a round, "
        "while it fits --l2-budget), the others share what is left",
    ),
    "smartdeal": (
        bool,
        _default(PackConfig, "smartdeal"),
        None,
        "pages (pool and exclusive) as power-of-two codes x a 3x3 basis per page (page size: "
        "a multiple of 3; budgets are spent in coded bytes)",
    ),
    "page_aligned": (
        bool,
        _default(PackConfig, "page_aligned"),
        None,
        "every weight starts on a page (zero-copy kernels: `wvirt build --zero-copy`)",
    ),
    "kernel_layout": (
        bool,
        False,
        None,
        "store weights as the CPU kernels read them (dense weights transposed, convolutions "
        "output channels last): a switch runs no weight transform (`wvirt run --mapped` then "
        "moves no weight bytes)",
    ),
    "lossless": (bool, False, None, "no sharing, no data: every task on pages of its own"),
    "explore": (
        str,
        None,
        None,
        "pack at pools of these fractions of the tasks' pages (e.g. 0.75,0.5,0.35; shared "
        "within tasks too) and keep the smallest that meets --max-error / --min-agreement on "
        "validation",
    ),
    "max_error": (
        float,
        None,
        None,
        "--explore: the largest relative output error (distilled values; a model of several "
        "outputs: its worst) a task may have on validation",
    ),
    "min_agreement": (
        float,
        None,
        None,
        "--explore: the smallest percentage (top-1 agreement, accuracy) a task may have on "
        "validation",
    ),
}
TASK_KEYS = ("model", "data", "objective", "outputs", "output_weights")


@dataclass
class PackSpec:
    """Models, data files and objectives by task name; options by name (unset: absent)."""

    models: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    objectives: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> output -> kind
    output_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # option -> where it was set

    def option(self, name: str):
        return self.options.get(name, PACK_OPTIONS[name][1])

    def set_option(self, name: str, value, source: str) -> None:
        self.options[name] = value
        self.sources[name] = source

    def source(self, name: str) -> str:
        """Where an option was set, for messages: `--pool-pages` or `manifest 'm.toml': [pack]
        pool_pages`."""
        return self.sources.get(name, f"--{name.replace('_', '-')}")


def read_manifest(path: str) -> PackSpec:
    """A manifest: `[tasks.NAME]` tables with `model`, `data` (optional) and `objective`
    (optional), and a `[pack]` table of options; paths are relative to the manifest."""
    from ..algorithms.data import check_known

    try:
        with open(path, "rb") as f:
            manifest = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"manifest '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"manifest '{path}' is not valid TOML: {err}") from err
    where = f"manifest '{path}'"
    check_known(where, manifest, ("tasks", "pack"), "tables")
    tasks = manifest.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{where}: no [tasks.NAME] tables")
    folder = os.path.dirname(os.path.abspath(path))
    spec = PackSpec()
    for name, entry in tasks.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: tasks.{name} must be a table with {', '.join(TASK_KEYS)}")
        check_known(f"{where}: tasks.{name}", entry, TASK_KEYS)
        if "model" not in entry:
            raise ValueError(f"{where}: tasks.{name} has no 'model'")
        spec.models[name] = os.path.join(folder, str(entry["model"]))
        if "data" in entry:
            spec.data[name] = os.path.join(folder, str(entry["data"]))
        if "objective" in entry:
            spec.objectives[name] = check_objective(
                str(entry["objective"]), f"{where}: tasks.{name}"
            )
        for key, kind in (("outputs", str), ("output_weights", float)):
            table = entry.get(key, {})
            values = table.values() if isinstance(table, dict) else ()
            if not isinstance(table, dict) or not all(_is(v, kind) for v in values):
                raise ValueError(
                    f"{where}: tasks.{name}.{key} must be a table of output name = "
                    f"{'kind (logits, probs or values)' if kind is str else 'weight'}"
                )
            if table:
                getattr(spec, key)[name] = {o: kind(v) for o, v in table.items()}
    options = manifest.get("pack", {})
    if not isinstance(options, dict):
        raise ValueError(f"{where}: 'pack' must be a table ([pack]) of options")
    check_known(f"{where}: [pack]", options, PACK_OPTIONS)
    for key, value in options.items():
        kind, _, choices, _ = PACK_OPTIONS[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if kind is str and key in ("resume",) and ok:
            value = os.path.join(folder, value)
        if not ok or (choices and value not in choices):
            expected = f"one of {list(choices)}" if choices else kind.__name__
            raise ValueError(f"{where}: [pack] {key} = {value!r}, expected {expected}")
        spec.set_option(key, value, f"{where}: [pack] {key}")
    return spec


def _is(value, kind: type) -> bool:
    """A TOML value of `kind` (an int is a float too; a bool is neither)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def check_objective(name: str, where: str) -> str:
    from ..algorithms.objectives import NAMES as OBJECTIVES  # torch: not for `wvirt --help`

    if name not in OBJECTIVES:
        raise ValueError(f"{where}: unknown objective {name!r} (valid: {', '.join(OBJECTIVES)})")
    return name
