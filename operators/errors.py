"""Exception hierarchy of streamrec: one root, one subclass per concept."""

__all__ = ["StreamrecError", "ConfigError", "SetupError", "BundleError", "EventValidationError", "StateLayoutError"]


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class ConfigError(StreamrecError, ValueError):
    """A job, training or replay setting is invalid; the message names the setting and the fix."""


class SetupError(StreamrecError):
    """The machine lacks something streamrec needs (Java, the Maven-built jars, an installed extra, the
    ``streamrec`` script); the message says how to install it. Not a setting: no option fixes it."""


class BundleError(StreamrecError):
    """A model bundle is missing, malformed or tampered with; the job refuses to serve it."""


class EventValidationError(StreamrecError, ValueError):
    """An input event breaks the event contract; ``reason`` is what goes to the dead-letter topic."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class StateLayoutError(StreamrecError):
    """Keyed state written in a layout this version cannot read (e.g. restored from a newer savepoint)."""
