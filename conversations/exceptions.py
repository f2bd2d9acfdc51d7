"""The archiver's errors, each with a message a person can act on."""


class ArchiverError(Exception):
    """Base class of the archiver's own errors."""


class RedisUnavailable(ArchiverError):
    """Redis could not be reached or dropped the connection."""


class MalformedCheckpoint(ArchiverError):
    """A stored value is not a checkpoint the archiver can read safely; it gets quarantined."""


class RunInProgress(ArchiverError):
    """Another archival run holds the lock."""


class LockLost(ArchiverError):
    """The run lock expired or was deleted while its holder worked; the holder stops."""


class RetentionError(ArchiverError):
    """Retention cannot go ahead; the message says what to fix. Nothing was deleted."""
