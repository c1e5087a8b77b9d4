"""Flink wiring: the recommendation job, its thin function adapters, and the ``streamrec`` CLI.

Key pieces: :mod:`flink_jobs.recommend_job` (entry point, submittable with ``flink run -py``),
:class:`~flink_jobs.functions.ValidateEvents`, :class:`~flink_jobs.functions.RecommendFunction`.
"""

__all__: list[str] = []
