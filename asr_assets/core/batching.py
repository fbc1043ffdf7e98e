"""Length-bucketed batching: padding is wasted compute, so similar lengths ride together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    """Indices into the input, and the length every member is padded to."""

    indices: list[int]
    padded_length: int


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket that holds `length`; longer inputs are padded to a multiple of the largest.

    A small, fixed set of padded shapes lets a server (Triton's dynamic batcher) merge requests
    from different clients, and keeps compiled kernels warm.
    """
    for bucket in buckets:
        if length <= bucket:
            return bucket
    largest = buckets[-1]
    return -(-length // largest) * largest


def plan_batches(
    lengths: Sequence[int],
    *,
    max_batch_size: int = 16,
    max_batch_samples: int = 16_000 * 120,
    buckets: Sequence[int] | None = None,
) -> list[BatchPlan]:
    """Group inputs of similar length; a batch's padded size never exceeds `max_batch_samples`.

    Without buckets a batch is padded to its longest member (the local engine); with buckets,
    to that member's bucket (the Triton engine).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    plans: list[BatchPlan] = []
    current: list[int] = []
    current_pad = 0
    for index in order:
        length = max(1, int(lengths[index]))
        padded = bucket_length(length, buckets) if buckets else length
        new_pad = max(current_pad, padded)
        if current and (
            len(current) >= max_batch_size or new_pad * (len(current) + 1) > max_batch_samples
        ):
            plans.append(BatchPlan(current, current_pad))
            current, new_pad = [], padded
        current.append(index)
        current_pad = new_pad
    if current:
        plans.append(BatchPlan(current, current_pad))
    return plans
