"""The bench's Flink baseline: the recommendation job's exact wiring (Kafka SQL source, Java-side keying,
one thread-mode Python keyed function, Kafka sinks, same connector and checkpoint settings) with a function
that forwards each payload unchanged. The difference to the real job is what streamrec's own work costs.

With ``--touch-state`` (the bench's ``identity-state`` pipeline) the function also does what any job that keeps
a user's window in Flink keyed state must do per event: read the user's value and write back one of the real
job's size (:data:`STATE_BYTES`, a 200-event window with the LRU state), through the same state descriptor
(pickled bytes, TTL). The difference to it is streamrec's own computation; the difference between the two
baselines is the platform's price of keyed state in thread mode.

    python -m perf.identity_job --bootstrap-servers H:P --bundle DIR --checkpoint-dir DIR --input-topic T ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyflink.common import Row
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext

from flink_jobs.functions import user_state_descriptor
from flink_jobs.recommend_job import build_arg_parser, build_job, config_from_args, parse_job_args

STATE_BYTES = 4_134
"""The real job's state per user at 200 events (``operators/state.py``'s layout, LRU 2 x 64, 3 shown lists)."""


class IdentityFunction(KeyedProcessFunction):
    """(key, payload, ...) -> Row(key, payload): one Python call per event, nothing else."""

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        yield Row(value[0], value[1])


class StateTouchingFunction(KeyedProcessFunction):
    """The identity, plus one keyed-state read and one write of :data:`STATE_BYTES` per event."""

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(user_state_descriptor(self.ttl_ms))

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        stored = self.state.value()
        payload = bytes(value[1])
        # a new value each event, as the job's (its window moved): the stored bytes shifted by the payload
        body = (payload + (stored or b""))[:STATE_BYTES]
        self.state.update(body.ljust(STATE_BYTES, b"\0"))
        yield Row(value[0], value[1])


def main(argv: list[str] | None = None) -> int:
    from deploy.harness.paths import flink_connector_jar, java_home

    parser = build_arg_parser()
    parser.add_argument("--touch-state", action="store_true",
                        help="read and write the user's keyed state per event, as the real job does")
    args, _ = parse_job_args(argv, parser)
    cfg = config_from_args(args)
    os.environ.setdefault("JAVA_HOME", java_home())
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        os.environ["FLINK_LOG_DIR"] = str(Path(args.log_dir).resolve())
    function = StateTouchingFunction(cfg.state_ttl_ms) if args.touch_state else IdentityFunction()
    env = build_job(cfg, flink_connector_jar(args.connector_jar), function=function)
    env.execute(cfg.job_name + "-identity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
