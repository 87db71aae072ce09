"""Host runtimes: the multitask runtime over a resident page pool, and plain-TVM references."""

from .multitask_runtime import MultitaskRuntime
from .standalone import StandaloneModel

__all__ = [
    "MultitaskRuntime",
    "StandaloneModel",
]
