"""What a person runs, above the job: the ``streamrec`` command line and its tools.

Layers, top to bottom (checked by ``lint-imports``, contract in ``pyproject.toml``; nothing imports upward):

- :mod:`deploy.cli`: the ``streamrec`` command, one sub-command per tool;
- :mod:`perf`: the benchmarks (``streamrec bench`` runs :mod:`perf.bench`);
- the tools: :mod:`deploy.demo`, :mod:`deploy.replay`, :mod:`deploy.cluster` (``cluster``, ``deploy``,
  ``stop``), :mod:`deploy.faults` (with :mod:`deploy.cluster_job`);
- :mod:`deploy.harness`: the library the tools stand on (local broker, job processes, paths, one collector,
  the event generator, the demo bundle);
- :mod:`model_export` (training and export) beside :mod:`flink_jobs` (what runs on Flink);
- :mod:`operators`: the pure logic both stand on.
"""

__all__: list[str] = []
