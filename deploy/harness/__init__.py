"""The harness the tools stand on: the local Kafka broker (:mod:`~deploy.harness.local_kafka`), job
processes (:mod:`~deploy.harness.job_process`, :mod:`~deploy.harness.process`), where things are
(:mod:`~deploy.harness.paths`), Kafka clients and the one collector of the job's topics
(:mod:`~deploy.harness.kafka_clients`, :mod:`~deploy.harness.collect`), the event generator
(:mod:`~deploy.harness.generator`), the demo bundle (:mod:`~deploy.harness.demo_bundle`) and Flink log parsing
(:mod:`~deploy.harness.flink_log`). It imports :mod:`model_export`, :mod:`flink_jobs` and :mod:`operators`, never a
tool above it.
"""

__all__: list[str] = []
