"""Bit-for-bit repeatable gradients on a CPU with several threads.

With more than one intra-op thread, the backward pass of an embedding lookup (the gradient of
W_E) adds the rows of repeated tokens in whatever order the threads finish, so two trainings with
the same seed differed in their last bits after one step, and a run resumed after ``kill -9`` did
not match the uninterrupted one (found by tests/test_kill_resume.py). torch's deterministic
algorithms take the ordered path for such ops. Results still depend on the number of threads (a
different split of a reduction rounds differently), so trainings record it and ``reproduce`` fixes
it per step instead of re-sharing cores as workers finish, and a resumed training finishes with
the thread count it began with (:func:`threads`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic() -> Iterator[None]:
    """torch's deterministic algorithms while the block runs, the caller's setting after it. Ops
    with no deterministic version warn instead of failing (``warn_only``), as on a GPU whose
    cuBLAS workspace is not configured."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@contextmanager
def threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` while the block runs, the caller's count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
