"""tvm-weightvirt: several DNNs in one memory budget through shared weight pages, built by TVM."""

from .build import Library, build, lower
from .layout import PageLayout, WeightSpan
from .plan import PagePlan, TaskPages
from .task import IntakeError, Task

__all__ = [
    "IntakeError",
    "Library",
    "PageLayout",
    "PagePlan",
    "Task",
    "TaskPages",
    "WeightSpan",
    "build",
    "lower",
]
