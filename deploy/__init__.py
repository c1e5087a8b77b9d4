"""Running streamrec's parts: the local Kafka broker, JVM artifact paths, job processes.

Key pieces: :class:`~deploy.local_kafka.LocalKafka` and :class:`~deploy.job_process.JobProcess`.
"""

__all__: list[str] = []
