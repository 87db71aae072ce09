"""The check a pack test ends with: the compiled runtime, run on each task's test split one
sample at a time, computes what torch computes with the plan's weights (<= 1e-4), and so
exactly the packed accuracy the report gives."""

from __future__ import annotations

import numpy as np
import torch


def assert_runtime_reproduces_the_report(runtime, tasks, plan, report: dict) -> None:
    for t in tasks:
        test = t.splits["test"]
        logits = np.concatenate([runtime.run(t.name, x[None])[0] for x in test.x])
        with torch.no_grad():
            expected = t.model_from_plan(plan)(torch.from_numpy(test.x)).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4, err_msg=t.name)
        correct = int((logits.argmax(1) == test.y).sum())
        assert 100.0 * correct / len(test.y) == report["tasks"][t.name]["packed"], t.name
