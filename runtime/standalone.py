"""One task compiled alone by plain TVM, its weights passed as inputs (the reference)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm_weightvirt.task import Task

from .multitask_runtime import outputs_to_numpy


class StandaloneModel:
    """`task.mod` compiled alone with TVM's default pipeline; `run` feeds the task's weights."""

    def __init__(self, task: Task, target: str | dict = "llvm", device=None) -> None:
        target = tvm.target.Target(target)
        self.device = device or tvm.cpu()
        executable = tvm.compile(task.mod, target, relax_pipeline=relax.get_default_pipeline(target))
        self.vm = relax.VirtualMachine(executable, self.device)
        self.weights = [tvm.runtime.tensor(w, self.device) for w in task.weights.values()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]
        return outputs_to_numpy(self.vm["main"](*args, *self.weights))
