"""The bench's Flink baseline: the recommendation job's exact wiring (Kafka SQL source, Java-side keying,
one thread-mode Python keyed function, Kafka sinks, same connector and checkpoint settings) with a function
that forwards each payload unchanged. The difference to the real job is what streamrec's own work costs.

    python -m perf.identity_job --bootstrap-servers H:P --bundle DIR --checkpoint-dir DIR --input-topic T ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyflink.common import Row
from pyflink.datastream.functions import KeyedProcessFunction

from flink_jobs.recommend_job import build_arg_parser, build_job, config_from_args


class IdentityFunction(KeyedProcessFunction):
    """(key, payload, ...) -> Row(key, payload): one Python call per event, nothing else."""

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        yield Row(value[0], value[1])


def main(argv: list[str] | None = None) -> int:
    from deploy.paths import flink_connector_jar, java_home

    parser = build_arg_parser()
    args, _ = parser.parse_known_args(argv)
    cfg = config_from_args(args)
    os.environ.setdefault("JAVA_HOME", java_home())
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        os.environ["FLINK_LOG_DIR"] = str(Path(args.log_dir).resolve())
    env = build_job(cfg, flink_connector_jar(args.connector_jar), function=IdentityFunction())
    env.execute(cfg.job_name + "-identity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
