"""Host runtimes: the multitask runtime over a resident page pool, and plain-TVM references."""

from .multitask_runtime import Counters, MultitaskRuntime
from .scheduler import POLICIES, schedule
from .standalone import ReloadModels, ResidentModels, StandaloneModel

__all__ = [
    "POLICIES",
    "Counters",
    "MultitaskRuntime",
    "ReloadModels",
    "ResidentModels",
    "StandaloneModel",
    "schedule",
]
