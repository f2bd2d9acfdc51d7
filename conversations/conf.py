"""The archiver's settings: one namespaced dict, `settings.ARCHIVER`, read at call time.

Every key has a default here, so a deployment sets only what differs, and tests override
the dict with pytest-django's `settings` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    # Where the bot's checkpoints live.
    "REDIS_URL": "redis://localhost:6379/0",
    # Archive a conversation once its newest checkpoint is this old ...
    "CUTOFF_HOURS": 23,
    # ... or once its keys have less than this left to live, whichever comes first. None: what
    # the keys need to outlive the next run, one schedule interval + the longest of the recent
    # runs + TTL_MARGIN_MINUTES (options.required_buffer); a value set lower is refused.
    "TTL_BUFFER_MINUTES": None,
    "TTL_MARGIN_MINUTES": 10,
    # Each run also copies the new messages of every conversation not yet due (the live
    # mirror), deleting nothing; its keys are deleted when it is due, as without the mirror.
    "MIRROR_LIVE": True,
    # Conversations read, written and deleted together; bounds memory.
    "BATCH_SIZE": 200,
    # Threads that store batches, each with its own database connection (PostgreSQL only;
    # SQLite gets one): while one batch's COPY runs in the server, another is formatted.
    "WRITERS": 2,
    # SCAN's COUNT hint: keys looked at per call (docs/performance.md has what a call costs).
    "SCAN_COUNT": 1000,
    # Database errors: attempts per batch and the pause between them.
    "RETRY_ATTEMPTS": 2,
    "RETRY_DELAY_SECONDS": 5,
    "HEALTH_FILE": "/tmp/archiver_health.json",
    # Prometheus metrics (conversations/metrics.py): written here after every run, for
    # node_exporter's textfile collector ("" writes none); and served at /metrics, which asks
    # for "Authorization: Bearer <token>" when a token is set.
    "METRICS_TEXTFILE": "/tmp/archiver_metrics.prom",
    "METRICS_TOKEN": "",
    # How often cron starts archive_checkpoints (60, 30 or 15; settings.py turns it into the
    # crontab schedule), and how old the health file's last_run may be before
    # check_archiver_health fails (never less than one interval plus 30 minutes).
    "SCHEDULE_MINUTES": 60,
    "HEALTH_MAX_AGE_MINUTES": 90,
    # Which layouts are read: "redis" (RedisSaver/AsyncRedisSaver), "shallow"
    # (the shallow savers) and "plain" (langgraph:checkpoint:{conversation_id}:{ns} strings).
    "LAYOUTS": ("redis", "shallow", "plain"),
    # Key prefixes of langgraph-checkpoint-redis (its defaults) and of the plain layout.
    "CHECKPOINT_PREFIX": "checkpoint",
    "CHECKPOINT_LATEST_PREFIX": "checkpoint_latest",
    "CHECKPOINT_WRITE_PREFIX": "checkpoint_write",
    "WRITE_KEYS_ZSET_PREFIX": "write_keys_zset",
    # The shallow savers' own: the sync saver's registry of pending writes, and the async
    # saver's pointer to its current checkpoint.
    "WRITE_REGISTRY_PREFIX": "write_registry",
    "CURRENT_CHECKPOINT_PREFIX": "current_checkpoint",
    "PLAIN_PREFIX": "langgraph:checkpoint:",
    # Names of the state fields that carry the conversation-level facts. For the conversation
    # and customer ids, the first name the state sets wins; where the state sets none, the
    # newest checkpoint's metadata is asked for the same names (savers that follow LangGraph's
    # get_checkpoint_metadata copy the run's configurable keys there); then the conversation
    # id is the thread id.
    "CONVERSATION_ID_FIELDS": ("conversation_id",),
    "CUSTOMER_ID_FIELDS": ("customer_id", "user_id"),
    "SUMMARY_FIELD": "conversation_summary",
    "MESSAGES_FIELD": "messages",
    # The lock that keeps two runs apart; it expires this long after its holder last
    # renewed it (every batch), so a killed run blocks the next one only briefly.
    "LOCK_KEY": "conversation-archiver:lock",
    "LOCK_TIMEOUT_SECONDS": 300,
    # How long a purge or an erasure waits for the run lock, and an archive run for a purge or
    # an erasure to release it (conversations/locking.py).
    "LOCK_WAIT_SECONDS": 600,
    # purge_history keeps this many calendar months.
    "RETENTION_MONTHS": 6,
}


def get(name: str) -> Any:
    """A setting by its key, the override or its default; the rest of the app reads the typed
    functions below, which call this."""
    overrides = getattr(settings, "ARCHIVER", {}) or {}
    if name in overrides:
        return overrides[name]
    return DEFAULTS[name]


# One function per setting, read at call time (django-pghistory's config.py), so that callers
# see what type they get and a test's `settings.ARCHIVER` override takes effect at once. A value
# of the wrong type is a configuration error that names the key.


def _number(name: str) -> float:
    value: object = get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImproperlyConfigured(f"ARCHIVER[{name!r}] is {value!r}; it must be a number.")
    return value  # an int stays an int, so that messages print "5s", not "5.0s"


def _whole(name: str) -> int:
    value: object = get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImproperlyConfigured(f"ARCHIVER[{name!r}] is {value!r}; it must be a whole number.")
    return value


def _text(name: str) -> str:
    value: object = get(name)
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"ARCHIVER[{name!r}] is {value!r}; it must be a string.")
    return value


def _names(name: str) -> tuple[str, ...]:
    """A list of names; a single name is accepted where a list is expected."""
    value = get(name)
    return (value,) if isinstance(value, str) else tuple(value)


def redis_url() -> str:
    return _text("REDIS_URL")


def cutoff_hours() -> float:
    return _number("CUTOFF_HOURS")


def ttl_buffer_minutes() -> float | None:
    return None if get("TTL_BUFFER_MINUTES") is None else _number("TTL_BUFFER_MINUTES")


def ttl_margin_minutes() -> float:
    return _number("TTL_MARGIN_MINUTES")


def mirror_live() -> bool:
    return bool(get("MIRROR_LIVE"))


def batch_size() -> int:
    return _whole("BATCH_SIZE")


def writers() -> int:
    return max(1, _whole("WRITERS"))


def scan_count() -> int:
    return _whole("SCAN_COUNT")


def retry_attempts() -> int:
    return max(1, _whole("RETRY_ATTEMPTS"))


def retry_delay_seconds() -> float:
    return _number("RETRY_DELAY_SECONDS")


def health_file() -> str:
    return _text("HEALTH_FILE")


def metrics_textfile() -> str:
    return "" if get("METRICS_TEXTFILE") is None else _text("METRICS_TEXTFILE")


def metrics_token() -> str:
    return "" if get("METRICS_TOKEN") is None else _text("METRICS_TOKEN")


def schedule_minutes() -> int:
    return _whole("SCHEDULE_MINUTES")


def health_max_age_minutes() -> float:
    return _number("HEALTH_MAX_AGE_MINUTES")


def layouts() -> tuple[str, ...]:
    return _names("LAYOUTS")


def checkpoint_prefix() -> str:
    return _text("CHECKPOINT_PREFIX")


def checkpoint_latest_prefix() -> str:
    return _text("CHECKPOINT_LATEST_PREFIX")


def checkpoint_write_prefix() -> str:
    return _text("CHECKPOINT_WRITE_PREFIX")


def write_keys_zset_prefix() -> str:
    return _text("WRITE_KEYS_ZSET_PREFIX")


def write_registry_prefix() -> str:
    return _text("WRITE_REGISTRY_PREFIX")


def current_checkpoint_prefix() -> str:
    return _text("CURRENT_CHECKPOINT_PREFIX")


def plain_prefix() -> str:
    return _text("PLAIN_PREFIX")


def lock_key() -> str:
    return _text("LOCK_KEY")


def lock_timeout_seconds() -> int:
    return _whole("LOCK_TIMEOUT_SECONDS")


def lock_wait_seconds() -> float:
    return _number("LOCK_WAIT_SECONDS")


def retention_months() -> int:
    return _whole("RETENTION_MONTHS")


@dataclass(frozen=True)
class Fields:
    """The names of the state keys the archive reads."""

    messages: str
    summary: str
    conversation_id: tuple[str, ...]  # the first one set wins
    customer_id: tuple[str, ...]


def fields() -> Fields:
    """The state keys the archive reads; a single name is accepted where a list is expected."""

    return Fields(
        messages=_text("MESSAGES_FIELD"),
        summary=_text("SUMMARY_FIELD"),
        conversation_id=_names("CONVERSATION_ID_FIELDS"),
        customer_id=_names("CUSTOMER_ID_FIELDS"),
    )
