"""tvm-weightvirt: several DNNs in one memory budget through shared weight pages, built by TVM."""

from .artifact import ArtifactError, WvPack, load_wvpack, save_wvpack
from .build import Library, build, lower
from .layout import PageLayout, WeightSpan
from .plan import PagePlan, TaskPages
from .task import IntakeError, Task

__all__ = [
    "ArtifactError",
    "IntakeError",
    "Library",
    "PageLayout",
    "PagePlan",
    "Task",
    "TaskPages",
    "WeightSpan",
    "WvPack",
    "build",
    "load_wvpack",
    "lower",
    "save_wvpack",
]
