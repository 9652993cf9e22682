"""robofleet's own exception types. Anything a user can fix is a RobofleetError with the fix in it."""
from __future__ import annotations


class RobofleetError(Exception):
    """Base class of every error robofleet raises on purpose."""


class SpecError(RobofleetError, ValueError):
    """A spec (TOML) or option is invalid. The message names the key, the value and what is allowed.

    key: the dotted key ("env.trials"); message: what is wrong and the fix. Raised again under the key
    the user wrote (a wrapper's options): `raise SpecError(outer_key, exc.message) from exc`.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


class CheckpointError(RobofleetError):
    """A checkpoint, its statistics or its embeddings are missing, corrupt or do not match the model."""


class EpisodeError(RobofleetError):
    """An episode could not be run (simulator crash, bad action, ...)."""
