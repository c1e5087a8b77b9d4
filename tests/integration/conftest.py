"""Real parts: one Kafka broker process per test session, one job (MiniCluster) per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.harness.local_kafka import LocalKafka


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Apache Kafka node (KRaft) on 127.0.0.1, stopped at the end of the session."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
