"""MetaSchedule auto-tuning of a merged multitask module: each unique kernel once, into a
database that later builds reuse (here, or measured on a device over RPC).

options (what a build asks), database, kernels (what is searched), measurement (timing a
candidate); search uses all four, apply (the build's tuning step) uses search.
"""

from .apply import scheduled_pipeline, tune_and_apply
from .database import default_database, default_database_folder, open_database
from .kernels import fuse, kernels, tuning_target
from .measurement import measure
from .options import RPCTracker, TuningOptions

__all__ = [
    "RPCTracker",
    "TuningOptions",
    "default_database",
    "default_database_folder",
    "fuse",
    "kernels",
    "measure",
    "open_database",
    "scheduled_pipeline",
    "tune_and_apply",
    "tuning_target",
]
