"""Run any task of a compiled multitask library over a resident page pool."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm_weightvirt.compiler import Library
from tvm_weightvirt.plan import PagePlan


class MultitaskRuntime:
    """The pool made resident once; `switch(task)` gathers that task's weights (materialize
    mode) or does nothing (fused mode); `run(task, *inputs)` switches if needed and runs."""

    def __init__(self, plan: PagePlan, library: Library, device: tvm.runtime.Device | None = None):
        missing = sorted(set(plan.tasks) - set(library.num_inputs))
        if missing:
            raise ValueError(f"tasks {missing} of the page plan are not in the library")
        self.device = device or tvm.cpu()
        self.library = library
        self.vm = relax.VirtualMachine(library.executable, self.device)
        self.pool = tvm.runtime.tensor(plan.pool, self.device)
        self.page_tables = {
            name: tvm.runtime.tensor(t.page_table, self.device) for name, t in plan.tasks.items()
        }
        self.current: str | None = None
        self._weights = None

    def switch(self, task: str) -> None:
        if task not in self.page_tables:
            raise KeyError(f"no task '{task}' (has {sorted(self.page_tables)})")
        if self.library.materialize:
            self._weights = None  # free the previous task's weights before gathering
            # LiftTransformParams packs the parameters into one tuple argument.
            self._weights = self.vm[f"task_{task}_transform_params"](
                (self.pool, self.page_tables[task])
            )
        self.current = task

    def run(self, task: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs of `task` on `inputs` (numpy arrays in the model's input order)."""
        expected = self.library.num_inputs.get(task)
        if expected is not None and len(inputs) != expected:
            raise ValueError(f"task '{task}' takes {expected} inputs, got {len(inputs)}")
        if task != self.current:
            self.switch(task)
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]
        if self.library.materialize:
            result = self.vm[f"task_{task}"](*args, *self._weights)
        else:
            result = self.vm[f"task_{task}"](*args, self.pool, self.page_tables[task])
        return _to_numpy(result)


def _to_numpy(result) -> list[np.ndarray]:
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    out = []
    for item in result:
        out.extend(_to_numpy(item))
    return out
