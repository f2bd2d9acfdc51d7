"""The archiver's settings: one namespaced dict, `settings.ARCHIVER`, read at call time.

Every key has a default here, so a deployment sets only what differs, and tests override
the dict with pytest-django's `settings` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Where the bot's checkpoints live.
    "REDIS_URL": "redis://localhost:6379/0",
    # Archive a conversation once its newest checkpoint is this old ...
    "CUTOFF_HOURS": 23,
    # ... or once its keys have less than this left to live, whichever comes first. None: what
    # the keys need to outlive the next run, one schedule interval + the longest of the recent
    # runs + TTL_MARGIN_MINUTES (archiving.required_buffer); a value set lower is refused.
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
    # SCAN's COUNT hint (about 5 ms of the server's time a call on 400,000 keys).
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
    overrides = getattr(settings, "ARCHIVER", {}) or {}
    if name in overrides:
        return overrides[name]
    return DEFAULTS[name]


@dataclass(frozen=True)
class Fields:
    """The names of the state keys the archive reads."""

    messages: str
    summary: str
    conversation_id: tuple[str, ...]  # the first one set wins
    customer_id: tuple[str, ...]


def fields() -> Fields:
    """The state keys the archive reads; a single name is accepted where a list is expected."""

    def names(key: str) -> tuple[str, ...]:
        value = get(key)
        return (value,) if isinstance(value, str) else tuple(value)

    return Fields(
        messages=get("MESSAGES_FIELD"),
        summary=get("SUMMARY_FIELD"),
        conversation_id=names("CONVERSATION_ID_FIELDS"),
        customer_id=names("CUSTOMER_ID_FIELDS"),
    )
