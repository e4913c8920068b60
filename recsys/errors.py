"""Errors a user can cause. The CLI turns each into a one-line message and exit status 2."""


class RecsysError(Exception):
    """Base of the errors that come from input, config or state, not from a bug."""


class ConfigError(RecsysError, ValueError):
    """A configuration the user wrote is wrong; the message names the key."""


class MissingColumnError(RecsysError, ValueError):
    """A configured column is not in the data; the message names it and what is there."""


class MissingInputError(RecsysError, FileNotFoundError):
    """A configured input, snapshot or model does not exist."""


class RejectShareError(RecsysError, RuntimeError):
    """Too many rows failed validation (or none are left): publish nothing."""


class SnapshotError(RecsysError, ValueError):
    """A prepared snapshot is incomplete or its schema is not what the next job needs."""


class LeaseHeldError(RecsysError, RuntimeError):
    """Another run holds this ds's lease; the message names it and how to wait for it."""
