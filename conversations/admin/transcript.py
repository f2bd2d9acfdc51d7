"""The transcript: one conversation's messages in order, a page at a time, with what the
archive knows of the conversation and whether the bot still holds it in Redis.

Safety design: everything here is text that the template escapes. A page loads at most
TRANSCRIPT_PAGE_SIZE messages and TRANSCRIPT_MESSAGE_CHARS of each: a message of a
megabyte does not make a page of a megabyte; the message's own page shows all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict
from urllib.parse import urlencode

from django.contrib.admin.utils import quote
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.db.models.functions import Length, Substr
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django_stubs_ext import WithAnnotations

from conversations.admin.display import local_time, pretty_json, visible
from conversations.models import ArchivedConversation, ConversationHistory, LiveThread

TRANSCRIPT_PAGE_SIZE = 200
TRANSCRIPT_URL_NAME = "conversations_conversationhistory_transcript"
# A transcript shows this much of each message; the message's own page shows all of it.
TRANSCRIPT_MESSAGE_CHARS = 10_000


def transcript_url(conversation_id: str, position: int | None = None) -> str:
    url = reverse(f"admin:{TRANSCRIPT_URL_NAME}", args=[quote(conversation_id)])
    if position is None:
        return url
    page = position // TRANSCRIPT_PAGE_SIZE + 1
    return f"{url}?page={page}#m-{position}"


def live_threads(conversation_id: Any) -> QuerySet[LiveThread]:
    """The live mirror's rows of a conversation still in Redis (its keys not yet expired)."""
    return LiveThread.objects.filter(conversation_id=conversation_id).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


class Head(TypedDict):
    content_head: str  # the first TRANSCRIPT_MESSAGE_CHARS characters
    content_length: int  # of the whole content


@dataclass(frozen=True)
class TranscriptEntry:
    """One message as the transcript shows it; text only, the template escapes it."""

    position: int
    role: str
    name: str | None
    when: datetime
    content: str
    tool_calls: str | None
    tool_call_id: str | None
    content_blocks: str | None
    metadata: str | None
    removed_at: datetime | None  # when the bot removed it from its state
    subgraph: str  # the namespace of a message only a subgraph had, else ""
    length: int = 0  # of the whole text, when the transcript shows only its start
    url: str = ""  # the message's own page, which shows the whole text

    @classmethod
    def from_row(cls, row: WithAnnotations[ConversationHistory, Head]) -> TranscriptEntry:
        """`row` comes with `content_head` (the first TRANSCRIPT_MESSAGE_CHARS characters) and
        `content_length`: a message of a megabyte does not make a page of a megabyte."""
        content = row.content_head
        shortened = row.content_length > len(content)
        if row.role == "tool" and not shortened:
            content = _pretty_if_json(content)
        return cls(
            position=row.position,
            role=row.role,
            name=row.name,
            when=row.timestamp,
            content=visible(content) + ("…" if shortened else ""),
            tool_calls=pretty_json(row.tool_calls) if row.tool_calls else None,
            tool_call_id=row.tool_call_id,
            content_blocks=pretty_json(row.content_blocks) if row.content_blocks else None,
            metadata=pretty_json(row.metadata) if row.metadata else None,
            removed_at=row.removed_at,
            subgraph=row.checkpoint_ns if row.source != "plain" else "",  # the plain layout's is its key's suffix
            length=row.content_length if shortened else 0,
            url=reverse("admin:conversations_conversationhistory_change", args=[row.pk]) if shortened else "",
        )


def _pretty_if_json(text: str) -> str:
    """Tool results are often JSON documents: indent them, leave anything else as it is."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return text
    try:
        return pretty_json(json.loads(stripped))
    except ValueError:
        return text


def transcript_context(conversation_id: str, page_number: str | None) -> dict[str, Any]:
    """What the transcript template shows of one page of a conversation; Http404 when the
    archive has neither the conversation nor any of its messages."""
    messages = (
        ConversationHistory.objects.filter(conversation_id=conversation_id)
        .defer("content")
        .annotate(content_length=Length("content"), content_head=Substr("content", 1, TRANSCRIPT_MESSAGE_CHARS))
        .order_by("position", "pk")
    )
    conversation = ArchivedConversation.objects.filter(conversation_id=conversation_id).first()
    paginator = Paginator(messages, TRANSCRIPT_PAGE_SIZE)
    if conversation is None and paginator.count == 0:
        raise Http404("No archived conversation has this id.")
    page = paginator.get_page(page_number)
    customer_id = conversation.customer_id if conversation else (page[0].customer_id if page else None)
    changelist = reverse("admin:conversations_conversationhistory_changelist")
    return {
        "title": f"Conversation {conversation_id}",
        "conversation_id": conversation_id,
        "conversation": conversation,
        "summary": visible(conversation.summary) if conversation and conversation.summary else "",
        "customer_id": customer_id,
        "customer_url": f"{changelist}?{urlencode({'q': customer_id})}" if customer_id else None,
        "live": live_threads(conversation_id).order_by("-mirrored_at").first(),
        "first_message_at": local_time(conversation.first_message_at) if conversation else None,
        "last_message_at": local_time(conversation.last_message_at) if conversation else None,
        "page": page,
        "entries": [TranscriptEntry.from_row(row) for row in page.object_list],
    }
