"""Training that gives one machine the same result twice: seeded, deterministic kernels and a
fixed intra-op thread count (a float sum split over another number of threads rounds
differently), all restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Threads for training and Fisher, whatever the machine has: part of the baseline cache key.
# One thread: no parallel reduction order to differ, so OMP_NUM_THREADS changes nothing.
TRAIN_THREADS = 1


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Run the block with torch seeded, deterministic algorithms on and `TRAIN_THREADS` threads."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_rng_state(rng_state)
