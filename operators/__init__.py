"""streamrec's pure core: events, per-user state, model input, inference, serving. No pyflink imports here.

Key pieces: :func:`~operators.events.decode_event` (the event contract, hot path),
:class:`~operators.state.UserState` (packed per-user state), :func:`~operators.window.model_input` (what the
model sees), :class:`~operators.inference.OnnxModel`, :class:`~operators.serving.ServingCore` (one event in,
one list or dead letter out), :func:`~operators.bundle.load_bundle` and :class:`~operators.config.JobConfig`.
"""

from operators.errors import BundleError, ConfigError, EventValidationError, StateLayoutError, StreamrecError

__all__ = ["BundleError", "ConfigError", "EventValidationError", "StateLayoutError", "StreamrecError"]
