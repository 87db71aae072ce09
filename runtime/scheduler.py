"""Orders a queue of requests: FIFO, or grouped by task to cut context switches while no
request is overtaken by more than `max_wait` later requests."""

from __future__ import annotations

POLICIES = ("fifo", "group")


def schedule(
    tasks: list[str], policy: str = "fifo", max_wait: int = 8, current: str | None = None
) -> list[int]:
    """The order (indices into `tasks`, the queue's task names in arrival order) to serve in.

    "group": keep serving the current task's oldest pending request; when it has none, switch
    to the task of the oldest pending request. A request that `max_wait` later requests have
    already overtaken is served next, whatever its task, so its wait is bounded.
    """
    if policy not in POLICIES:
        raise ValueError(f"scheduling policy must be one of {POLICIES}, got {policy!r}")
    if max_wait < 0:
        raise ValueError(f"max_wait must be >= 0 requests, got {max_wait}")
    if policy == "fifo":
        return list(range(len(tasks)))
    pending = list(range(len(tasks)))  # arrival order
    overtaken = [0] * len(tasks)
    order = []
    while pending:
        oldest = pending[0]
        if overtaken[oldest] >= max_wait:
            pick = oldest
        else:
            pick = next((i for i in pending if tasks[i] == current), oldest)
        for i in pending:
            if i < pick:
                overtaken[i] += 1
        pending.remove(pick)
        order.append(pick)
        current = tasks[pick]
    return order
