"""streamrec's pure core: events, windows, inference, ranking. No pyflink imports here.

Key pieces: :func:`~operators.events.parse_event` (the event contract),
:func:`~operators.window.update_window` (per-user state), :class:`~operators.inference.OnnxScorer`,
:class:`~operators.recommender.Recommender` and :class:`~operators.config.JobConfig`.
"""

from operators.errors import BundleError, ConfigError, EventValidationError, StreamrecError

__all__ = ["BundleError", "ConfigError", "EventValidationError", "StreamrecError"]
