"""MetaSchedule auto-tuning of a merged multitask module: each unique kernel once, into a
database that later builds reuse (here, or measured on a device over RPC).

options (what a build asks) <- database <- kernels (what is searched) <- measurement <- search
<- apply (the build's tuning step).
"""

from .apply import apply_database, scheduled_pipeline, tune_and_apply
from .database import database_bytes, open_database
from .kernels import fuse, kernels, tuning_target
from .measurement import alloc_arguments, measure
from .options import RPCTracker, TuningOptions, TuningReport
from .search import tune

__all__ = [
    "RPCTracker",
    "TuningOptions",
    "TuningReport",
    "alloc_arguments",
    "apply_database",
    "database_bytes",
    "fuse",
    "kernels",
    "measure",
    "open_database",
    "scheduled_pipeline",
    "tune",
    "tune_and_apply",
    "tuning_target",
]
