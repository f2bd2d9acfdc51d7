"""The messages: conversation_history's list, search and detail page, and the transcript
page it links to (conversations/admin/transcript.py).

Scale: the list searches, filters and sorts only through indexes (see search.py and
changelist.py), lists roles from fixed choices instead of SELECT DISTINCT, and never loads
a whole message: some are megabytes.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django_stubs_ext import WithAnnotations

from conversations.admin.changelist import ReadOnlyAdmin
from conversations.admin.display import EXCERPT_CHARS, local_time_column, pretty_json, shorten, text_column, visible
from conversations.admin.search import search_messages
from conversations.admin.transcript import TRANSCRIPT_URL_NAME, transcript_context, transcript_url
from conversations.models import ConversationHistory

ROLES = ("human", "ai", "tool", "system")


class RoleFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would run SELECT DISTINCT role over the table."""

    title = "role"
    parameter_name = "role"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(role, role) for role in ROLES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(role=self.value())
        return queryset


class Excerpt(TypedDict):
    content_start: str  # the start of the content, all the list reads of it


@admin.register(ConversationHistory)
class ConversationHistoryAdmin(ReadOnlyAdmin[ConversationHistory]):
    list_display = ("when", "customer_id", "conversation", "position", "role", "excerpt")
    list_display_links = ("when",)
    # Only orders an index serves: sorting millions of rows by role or text would not be.
    sortable_by = ("when", "customer_id", "conversation")
    list_filter = (("timestamp", admin.DateFieldListFilter), RoleFilter)
    # Plain `=` lookups, which the (customer_id, timestamp) and (conversation_id, position)
    # indexes serve; "=customer_id" would become UPPER(..) = UPPER(..) and scan.
    search_fields = ("customer_id__exact", "conversation_id__exact")
    search_help_text = (
        'A customer id or conversation id (exact), or words from the messages ("a phrase", OR, -word); '
        "customer:ID or conversation:ID beside words searches one customer's or conversation's messages."
    )
    ordering = ("-timestamp", "-pk")
    count_noun = ("message", "messages")
    # A sort by customer or conversation continues along the index that serves it.
    index_order = {"customer_id": "timestamp", "conversation_id": "position"}
    fields = (
        "transcript",
        "conversation_id",
        "customer_id",
        "position",
        "role",
        "name",
        "local_timestamp",
        "content_text",
        "tool_calls_json",
        "tool_call_id",
        "message_id",
        "metadata_json",
        "source",
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "local_removed_at",
        "local_archived_at",
    )
    readonly_fields = fields

    def get_urls(self) -> list[URLPattern]:
        transcript = path(
            "transcript/<str:conversation_id>/",
            self.admin_site.admin_view(self.transcript_view),
            name=TRANSCRIPT_URL_NAME,
        )
        return [transcript, *super().get_urls()]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ConversationHistory], search_term: str
    ) -> tuple[QuerySet[ConversationHistory], bool]:
        """A customer or conversation id that exists gives exactly its messages; anything
        else is a word search in the messages."""
        term = search_term.strip()
        if not term:
            return queryset, False
        queryset, exact = search_messages(queryset, term, self.search_fields)
        request.exact_search = exact  # type: ignore[attr-defined]
        return queryset, False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConversationHistory]:
        # The list shows an excerpt: it never loads a whole message (some are megabytes).
        return super().get_queryset(request).defer("content").annotate(content_start=Substr("content", 1, EXCERPT_CHARS * 2))

    when = local_time_column("timestamp", "when", sortable=True)

    @admin.display(description="conversation", ordering="conversation_id")
    def conversation(self, obj: ConversationHistory) -> str:
        return format_html(
            '<a href="{}" title="Open the transcript">{}</a>',
            transcript_url(obj.conversation_id, obj.position),
            visible(obj.conversation_id),
        )

    @admin.display(description="text")
    def excerpt(self, obj: WithAnnotations[ConversationHistory, Excerpt]) -> str:
        text = shorten(visible(" ".join(obj.content_start.split())))
        if not text and obj.tool_calls:
            text = "[tool call: " + ", ".join(_tool_names(obj.tool_calls)) + "]"
        return text

    @admin.display(description="transcript")
    def transcript(self, obj: ConversationHistory) -> str:
        url = transcript_url(obj.conversation_id, obj.position)
        return format_html('<a href="{}">Open the whole conversation</a>', url)

    local_timestamp = local_time_column("timestamp", "timestamp")

    local_archived_at = local_time_column("archived_at", "archived at")

    local_removed_at = local_time_column("removed_at", "removed from the bot's state")

    content_text = text_column("content", "content", visible, css_class="message-text", empty=None)

    tool_calls_json = text_column("tool_calls", "tool calls", pretty_json)

    metadata_json = text_column("metadata", "metadata", pretty_json)

    def transcript_view(self, request: HttpRequest, conversation_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        shown = transcript_context(unquote(conversation_id), request.GET.get("page"))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, **shown}
        return TemplateResponse(request, "admin/conversations/conversationhistory/transcript.html", context)


def _tool_names(tool_calls: Any) -> list[str]:
    if not isinstance(tool_calls, list):
        return ["?"]
    return [str(call.get("name", "?")) if isinstance(call, dict) else "?" for call in tool_calls]
