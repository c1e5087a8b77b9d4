"""Kafka client helpers shared by the demo, the probe, the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["assigned_consumer"]


def assigned_consumer(bootstrap: str, topics: Sequence[str], *, from_beginning: bool, **config: Any):  # noqa: ANN201
    """A consumer manually assigned every partition of ``topics`` (no group join to wait for).

    ``from_beginning=False`` starts at the current end; the positions are resolved before returning, so
    nothing produced after this call is skipped.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **config)
    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or {0})]
    consumer.assign(parts)
    if from_beginning:
        consumer.seek_to_beginning(*parts)
    else:
        consumer.seek_to_end(*parts)
        for tp in parts:
            consumer.position(tp)
    return consumer
