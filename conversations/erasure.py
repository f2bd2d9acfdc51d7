"""Right to erasure: every trace of one customer leaves the archive and Redis.

Safety design:
- Whole conversations go, including what was said before the customer was identified.
- The run lock is held throughout, so no archive run stores a message of the customer while
  the erasure runs (conversations/locking.py); a live conversation the bot writes to meanwhile
  is left for the next erasure, and the command says so.
- An id that matches nothing is an error that names the closest ids: a typo must not pass
  for an erasure.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

from conversations import conf
from conversations.checkpoints import Conversation, Layout, enabled_layouts
from conversations.checkpoints.client import connect, redis_errors
from conversations.exceptions import RetentionError
from conversations.locking import ERASE, run_lock
from conversations.models import (
    ArchivedConversation,
    ConversationHistory,
    QuarantinedCheckpoint,
)
from conversations.retention import DELETE_BATCH, delete_in_batches

logger = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    customer_id: str
    dry_run: bool = False
    messages: int = 0
    conversations: list[str] = field(default_factory=list)
    live_conversations: list[str] = field(default_factory=list)
    live_changed: list[str] = field(default_factory=list)
    quarantined: int = 0

    def summary(self) -> str:
        verb = "Would erase" if self.dry_run else "Erased"
        text = (
            f"{verb} customer {self.customer_id!r}: {self.messages} archived messages in "
            f"{len(self.conversations)} conversations, {len(self.live_conversations)} live conversations in Redis, "
            f"{self.quarantined} quarantined checkpoints"
        )
        if self.live_changed:
            text += f"; {len(self.live_changed)} live conversations changed while being erased: run again"
        return text + "."

    @property
    def matched(self) -> bool:
        return bool(self.messages or self.conversations or self.live_conversations or self.quarantined)


class NothingMatched(RetentionError):
    """No archived message, live conversation or quarantined value names the customer."""


# How many ids that begin like the one given are compared with it, at most.
CLOSE_ID_CANDIDATES = 5000


def close_ids(customer_id: str, n: int = 3) -> list[str]:
    """Archived customer ids that look like `customer_id` (a typo, another case, spaces):
    compared among those that share its first two characters, whatever their case."""
    similar = (
        ArchivedConversation.objects.filter(customer_id__istartswith=customer_id[:2])
        .values_list("customer_id", flat=True)
        .distinct()[:CLOSE_ID_CANDIDATES]
    )
    by_folded = {c.casefold(): c for c in similar if c}
    found = difflib.get_close_matches(customer_id.casefold(), list(by_folded), n=n, cutoff=0.6)
    return [by_folded[c] for c in found]


def nothing_matched(customer_id: str) -> NothingMatched:
    hint = close_ids(customer_id)
    message = f"Nothing matched customer id {customer_id!r}: no archived message, live conversation or quarantined value names it."
    if hint:
        message += " Close ids: " + ", ".join(repr(c) for c in hint) + "."
    else:
        message += " Check the id as stored (customer_id in the admin)."
    return NothingMatched(message)


def erase_customer(customer_id: str, *, dry_run: bool = False, redis_client: redis.Redis | None = None) -> ErasureReport:
    """Remove every archived message of a customer (whole conversations, including their
    messages from before the customer was identified), their conversations still in Redis,
    and quarantined values that name them. Holds the run lock throughout (not for a dry run)."""
    customer_id = customer_id.strip()
    if not customer_id:
        raise RetentionError("The customer id is empty; give the exact customer_id to erase.")
    client = redis_client or connect()
    with run_lock(client, ERASE, skip=dry_run) as renew:
        report = _erase(client, customer_id, dry_run, renew)
    if not report.matched:
        raise nothing_matched(customer_id)
    return report


def _erase(client: redis.Redis, customer_id: str, dry_run: bool, renew: Callable[[], None]) -> ErasureReport:
    report = ErasureReport(customer_id=customer_id, dry_run=dry_run)

    conversation_ids = set(
        ConversationHistory.objects.filter(customer_id=customer_id).values_list("conversation_id", flat=True).distinct()
    ) | set(ArchivedConversation.objects.filter(customer_id=customer_id).values_list("conversation_id", flat=True))
    report.conversations = sorted(conversation_ids)
    rows = ConversationHistory.objects.filter(Q(customer_id=customer_id) | Q(conversation_id__in=conversation_ids))
    quoted = json.dumps(customer_id, ensure_ascii=False).encode()
    quarantined = QuarantinedCheckpoint.objects.filter(
        pk__in=RawSQL("SELECT id FROM quarantined_checkpoint WHERE position(%s::bytea in raw_value) > 0", [quoted])
    )

    with redis_errors():
        live = _live_conversations_of(client, customer_id, enabled_layouts(), renew)
    report.live_conversations = sorted({c.conversation_id for _, c in live})

    if dry_run:
        report.messages = rows.count()
        report.quarantined = quarantined.count() if connection.vendor == "postgresql" else 0
        return report

    with redis_errors():
        for layout, conversation in live:
            if not layout.delete_many(client, [conversation])[0]:
                report.live_changed.append(conversation.conversation_id)
    report.messages = delete_in_batches(rows, DELETE_BATCH, lambda _: renew(), "messages")
    ArchivedConversation.objects.filter(Q(customer_id=customer_id) | Q(conversation_id__in=conversation_ids)).delete()
    if connection.vendor == "postgresql":
        report.quarantined = delete_in_batches(quarantined, DELETE_BATCH, None, "quarantined checkpoints")
    if report.matched:
        logger.info("%s", report.summary())
    return report


def _live_conversations_of(
    client: redis.Redis, customer_id: str, layouts: list[Layout], renew: Callable[[], None]
) -> list[tuple[Layout, Conversation]]:
    """Every conversation in Redis whose state names the customer, whatever its age."""
    found: list[tuple[Layout, Conversation]] = []
    for layout in layouts:
        for keys in layout.scan(client, conf.batch_size()):
            candidates, _ = layout.probe(client, keys)
            conversations, _ = layout.load(client, candidates) if candidates else ([], [])
            found += [(layout, c) for c in conversations if c.state.customer_id == customer_id]
            renew()
    return found
