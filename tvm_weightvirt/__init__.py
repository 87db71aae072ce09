"""tvm-weightvirt: several DNNs in one memory budget through shared weight pages, built by TVM.

The page plan and layout (and the algorithms on them) import without TVM; the names that need
TVM are loaded on first use.
"""

import importlib

from .layout import PageLayout, WeightSpan
from .plan import PagePlan, TaskPages

# Public names that need TVM (or torch): name -> module, imported on first access.
_LAZY = {
    "ArtifactError": "frontend.artifact",
    "WvPack": "frontend.artifact",
    "load_wvpack": "frontend.artifact",
    "save_wvpack": "frontend.artifact",
    "Library": "compile.library",
    "MODES": "abi",
    "build": "compile.compiler",
    "lower": "compile.compiler",
    "TuningOptions": "compile.tuning",
    "IntakeError": "frontend.task",
    "Task": "frontend.task",
    "pack": "frontend.packing",
    "QuantizeError": "frontend.int8",
    "quantize_int8": "frontend.int8",
    "explore_pool_sizes": "frontend.pool_search",
    "PackConfig": "algorithms.configs",
    "PackResult": "algorithms.pipeline",
    "OptimizeConfig": "algorithms.configs",
    "SeparationConfig": "algorithms.separation",
    "TaskData": "algorithms.data",
    "Split": "algorithms.data",
    "Objective": "algorithms.objectives",
}

__all__ = [
    "ArtifactError",
    "IntakeError",
    "Library",
    "MODES",
    "Objective",
    "OptimizeConfig",
    "PackConfig",
    "PackResult",
    "PageLayout",
    "PagePlan",
    "QuantizeError",
    "SeparationConfig",
    "Split",
    "Task",
    "TaskData",
    "TaskPages",
    "TuningOptions",
    "WeightSpan",
    "WvPack",
    "build",
    "load_wvpack",
    "lower",
    "pack",
    "explore_pool_sizes",
    "quantize_int8",
    "save_wvpack",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tvm_weightvirt' has no attribute '{name}'")
