"""The archive's records beside the messages: conversations, runs and quarantined values.

Safety design: a quarantined value is stored data, never unpickled or decoded as anything
but UTF-8; the page shows at most RAW_VALUE_SHOWN_BYTES of it, as escaped text or as hex
(display.describe_raw_value), and the list never loads the values at all.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django_stubs_ext import WithAnnotations

from conversations.admin.changelist import ReadOnlyAdmin
from conversations.admin.display import describe_raw_value, local_time_column, shorten, text_column, visible
from conversations.admin.transcript import live_threads, transcript_url
from conversations.models import ArchivedConversation, ArchiveRun, QuarantinedCheckpoint


class Live(TypedDict):
    live: bool  # the conversation still has keys in Redis (get_queryset annotates it)


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("live", "Live (still in Redis)"), ("archived", "Archived")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(live=True)
        if self.value() == "archived":
            return queryset.filter(live=False)
        return queryset


@admin.register(ArchivedConversation)
class ArchivedConversationAdmin(ReadOnlyAdmin[ArchivedConversation]):
    count_noun = ("conversation", "conversations")
    list_display = ("conversation_id", "customer_id", "state", "first_message", "last_message", "message_count", "transcript")
    list_filter = (StateFilter, ("last_message_at", admin.DateFieldListFilter))
    search_fields = ("customer_id__exact", "conversation_id__exact")
    search_help_text = "A customer id or conversation id (exact)."
    ordering = ("-last_message_at", "-pk")
    fields = (
        "transcript",
        "conversation_id",
        "customer_id",
        "state",
        "thread_id",
        "summary_text",
        "first_message",
        "last_message",
        "message_count",
        "first_archived",
        "last_archived",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ArchivedConversation]:
        return super().get_queryset(request).annotate(live=Exists(live_threads(OuterRef("conversation_id"))))

    @admin.display(description="state", ordering="live")
    def state(self, obj: WithAnnotations[ArchivedConversation, Live]) -> str:
        return "live" if obj.live else "archived"

    @admin.display(description="transcript")
    def transcript(self, obj: ArchivedConversation) -> str:
        return format_html('<a href="{}">Transcript</a>', transcript_url(obj.conversation_id))

    summary_text = text_column("summary", "summary", visible, css_class="message-text")

    first_message = local_time_column("first_message_at", "first message", sortable=True)

    last_message = local_time_column("last_message_at", "last message", sortable=True)

    first_archived = local_time_column("first_archived_at", "first archived")

    last_archived = local_time_column("last_archived_at", "last archived")


@admin.register(ArchiveRun)
class ArchiveRunAdmin(ReadOnlyAdmin[ArchiveRun]):
    count_noun = ("run", "runs")
    list_display = (
        "started",
        "finished",
        "status",
        "checkpoints_found",
        "checkpoints_archived",
        "messages_archived",
        "deferred",
        "mirrored",
        "mirrored_messages",
        "quarantined",
        "errors",
    )
    list_filter = ("status", ("started_at", admin.DateFieldListFilter))
    ordering = ("-started_at", "-pk")
    fields = (*list_display, "error_text")
    readonly_fields = fields

    started = local_time_column("started_at", "started", sortable=True)

    finished = local_time_column("finished_at", "finished", sortable=True)

    error_text = text_column("error_messages", "error messages")


@admin.register(QuarantinedCheckpoint)
class QuarantinedCheckpointAdmin(ReadOnlyAdmin[QuarantinedCheckpoint]):
    count_noun = ("quarantined value", "quarantined values")
    list_display = ("quarantined", "key", "source", "redis_type", "error_excerpt")
    list_filter = ("source", ("quarantined_at", admin.DateFieldListFilter))
    search_fields = ("key__icontains", "error__icontains")
    search_help_text = "Part of the Redis key or of the error."
    ordering = ("-quarantined_at", "-pk")
    fields = ("key", "source", "redis_type", "quarantined", "error_text", "value_sha1", "raw_value_shown")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[QuarantinedCheckpoint]:
        # The raw values can be large: the list never loads them, the detail page reads
        # its one value when it shows it.
        return super().get_queryset(request).defer("raw_value")

    quarantined = local_time_column("quarantined_at", "quarantined at", sortable=True)

    @admin.display(description="error")
    def error_excerpt(self, obj: QuarantinedCheckpoint) -> str:
        return shorten(" ".join(obj.error.split()))

    error_text = text_column("error", "error", empty=None)

    @admin.display(description="raw value")
    def raw_value_shown(self, obj: QuarantinedCheckpoint) -> str:
        what, shown = describe_raw_value(obj.raw_value)
        return format_html('<p>{}</p><pre class="raw-value">{}</pre>', what, shown)
