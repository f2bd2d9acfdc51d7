"""Read-only support views over the archive: search, transcripts, runs and quarantine.

Safety design: nothing here can write. Every admin below refuses add, change and delete
for everyone, superusers included, so purging stays the commands' job; support staff get
the `view` permissions through the `support` group (migration 0003). Everything shown
that came from a conversation goes through Django's autoescaping (or format_html), never
mark_safe, so a message or a quarantined value containing HTML is shown as text.

Scale: conversation_history holds millions of rows. Searches use only lookups an index
serves (plain `=` on customer_id and conversation_id, full-text search through the GIN
index of migration 0002), the role filter lists fixed choices instead of SELECT DISTINCT,
facets are off, and the paginator never counts the whole table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import PAGE_VAR, SEARCH_VAR, ChangeList
from django.contrib.postgres.search import SearchQuery, SearchVectorField
from django.core.exceptions import BadRequest, PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Exists, F, Func, OuterRef, Q, QuerySet
from django.db.models.functions import Length, Substr
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from conversations.models import ArchivedConversation, ArchiveRun, ConversationHistory, LiveThread, QuarantinedCheckpoint
from conversations.paginators import ArchivePaginator, parse_cursor

TRANSCRIPT_PAGE_SIZE = 200
TRANSCRIPT_URL_NAME = "conversations_conversationhistory_transcript"
# How much of a quarantined value the page shows; the rest stays in the database.
RAW_VALUE_SHOWN_BYTES = 64 * 1024
HEX_LINE_BYTES = 16
EXCERPT_CHARS = 120
# A transcript shows this much of each message; the message's own page shows all of it.
TRANSCRIPT_MESSAGE_CHARS = 10_000
ROLES = ("human", "ai", "tool", "system")
# Control characters other than tab and newlines: a value holding one is shown as hex.
CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
CONTROL_CHARACTERS = re.compile(f"[{CONTROLS}]")
# What could make a text look like something else: bidirectional controls (U+202E turns
# "gnp.exe" into "exe.png") and control characters. Shown as visible marks.
DISGUISING = re.compile(f"[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c{CONTROLS}]")
# The paginator's cursor in a "next" link (conversations/paginators.py).
AFTER_VAR = "after"
# The lookups Django's own list filters put in the URL (dates: a range; choices: exact).
FILTER_LOOKUPS = ("gte", "lt", "exact", "isnull")
# `customer:ID` and `conversation:ID` in a search, beside words or alone.
SEARCH_ID = re.compile(r"(?:^|\s)(customer|conversation):(\S+)")

admin.site.site_header = "Conversation archive"
admin.site.site_title = "Conversation archive"
admin.site.index_title = "Support"
# There is no public site to go back to.
admin.site.site_url = None


def local_time(value: datetime | None) -> str:
    """A time in the site's zone (settings.TIME_ZONE, Europe/Madrid), with the zone named."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def local_time_column(field: str, description: str, sortable: bool = False) -> Any:
    """An admin column showing a time field in the site's zone, optionally sortable by it."""

    @admin.display(description=description, ordering=field if sortable else None)
    def column(model_admin: admin.ModelAdmin, obj: Any) -> str:
        return local_time(getattr(obj, field))

    return column


def visible(text: str) -> str:
    """The text with every bidirectional control and control character shown as a mark
    (⟨U+202E⟩), so it reads as it is stored; newlines and tabs stay."""
    return DISGUISING.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def transcript_url(conversation_id: str, position: int | None = None) -> str:
    url = reverse(f"admin:{TRANSCRIPT_URL_NAME}", args=[quote(conversation_id)])
    if position is None:
        return url
    page = position // TRANSCRIPT_PAGE_SIZE + 1
    return f"{url}?page={page}#m-{position}"


class ContentWords(Func):
    """to_tsvector('simple', content), spelled as the GIN index of migration 0002 so the
    planner can use it (SearchVector would wrap the column in COALESCE and miss it)."""

    template = "to_tsvector('simple'::regconfig, %(expressions)s)"
    output_field = SearchVectorField()

    def __init__(self) -> None:
        super().__init__(F("content"))


def filter_by_words(queryset: QuerySet[ConversationHistory], words: str) -> QuerySet[ConversationHistory]:
    """Messages containing every word: full-text search on PostgreSQL, icontains elsewhere."""
    if connections[queryset.db].vendor == "postgresql":
        return queryset.alias(content_words=ContentWords()).filter(
            content_words=SearchQuery(words, config="simple", search_type="websearch")
        )
    condition = Q()
    for word in words.split():
        condition &= Q(content__icontains=word)
    return queryset.filter(condition)


class ArchiveChangeList(ChangeList):
    """Orders every list so that an index serves it and no two rows tie (a row then appears on
    exactly one page), and shows the page the paginator served."""

    def _get_deterministic_ordering(self, ordering: list[Any]) -> list[Any]:
        ordering = super()._get_deterministic_ordering(ordering)
        follows = getattr(self.model_admin, "index_order", {})
        result: list[Any] = []
        for item in ordering:
            if isinstance(item, str) and item in result:
                continue  # the admin's ordering and the queryset's repeat each other
            result.append(item)
            if isinstance(item, str) and item.lstrip("-") in follows:
                follow = ("-" if item.startswith("-") else "") + follows[item.lstrip("-")]
                if follow not in ordering:
                    result.append(follow)
        return result

    def get_ordering_field(self, field_name: Any) -> Any:
        """Only the columns the admin declares sortable: `?o=3` would otherwise sort millions of
        rows by a column no index serves."""
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    @property
    def next_url(self) -> str | None:
        """The next page, read from after this page's last row (see ArchivePaginator)."""
        if not self.multi_page:
            return None
        after = getattr(self.paginator, "next_after", None)
        if after is not None:
            return self.get_query_string({PAGE_VAR: self.page_num + 1, AFTER_VAR: after})
        if self.paginator.open_ended or self.page_num >= self.paginator.num_pages:
            return None
        return self.get_query_string({PAGE_VAR: self.page_num + 1})

    @property
    def clear_search_url(self) -> str:
        """This list without its search (its filters kept)."""
        return self.get_query_string(remove=[SEARCH_VAR])

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if self.multi_page and not self.paginator.open_ended:
            self.page_num = min(self.page_num, self.paginator.num_pages)


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only, for everyone; cheap on big tables."""

    actions = None
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    list_max_show_all = 0  # "Show all" would load a whole search (and dropped it beside one)
    # The noun of the result count under the list.
    count_noun = ("row", "rows")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ArchiveChangeList

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        # The paginator's cursor is not a filter: taken out before the changelist reads the rest.
        if AFTER_VAR in request.GET:
            params = request.GET.copy()
            after = params.pop(AFTER_VAR)[-1]
            try:
                parse_cursor(after)
            except (ValueError, OverflowError):
                raise BadRequest(f"Invalid {AFTER_VAR}: {after!r}") from None
            request.GET, request.page_after = params, after  # type: ignore[attr-defined]
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:  # a malformed date, say: an error, not the whole archive
            raise BadRequest(f"Invalid filter: {exc}") from exc

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        """Only what the declared filters send: a lookup typed into the URL
        (content__icontains=..., metadata__note__icontains=...) would scan the whole table.
        Anything else is refused with 400."""
        for item in self.list_filter:
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                if lookup == item.parameter_name:
                    return True
                continue
            field = item[0] if isinstance(item, (list, tuple)) else item
            if lookup == field or lookup in {f"{field}__{suffix}" for suffix in FILTER_LOOKUPS}:
                return True
        return False

    def get_paginator(
        self, request: HttpRequest, queryset: QuerySet[Any], per_page: int, orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> ArchivePaginator:
        exact = getattr(request, "exact_search", False)
        after = getattr(request, "page_after", None)
        return ArchivePaginator(queryset, per_page, orphans, allow_empty_first_page, exact=exact, after=after)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> tuple[QuerySet[Any], bool]:
        """Exact ids only: what an index counts cheaply."""
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        exact_only = all(field.endswith("__exact") for field in self.search_fields or ())
        request.exact_search = exact_only and bool(search_term.strip())  # type: ignore[attr-defined]
        return queryset, duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RoleFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would run SELECT DISTINCT role over the table."""

    title = "role"
    parameter_name = "role"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(role, role) for role in ROLES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(role=self.value())
        return queryset


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
    def from_row(cls, row: ConversationHistory) -> TranscriptEntry:
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


@admin.register(ConversationHistory)
class ConversationHistoryAdmin(ReadOnlyAdmin):
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
        ids = {kind: value for kind, value in SEARCH_ID.findall(term)}
        words = SEARCH_ID.sub(" ", term).strip()
        if ids:
            if "customer" in ids:
                queryset = queryset.filter(customer_id=ids["customer"])
            if "conversation" in ids:
                queryset = queryset.filter(conversation_id=ids["conversation"])
            request.exact_search = not words  # type: ignore[attr-defined]
            return (filter_by_words(queryset, words) if words else queryset), False
        exact = Q()
        for lookup in self.search_fields:
            exact |= Q(**{lookup: term})
        if self.model._default_manager.filter(exact).exists():
            request.exact_search = True  # type: ignore[attr-defined]
            return queryset.filter(exact), False
        return filter_by_words(queryset, term), False

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
    def excerpt(self, obj: ConversationHistory) -> str:
        text = visible(" ".join(obj.content_start.split()))
        if len(text) > EXCERPT_CHARS:
            text = text[: EXCERPT_CHARS - 1] + "…"
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

    @admin.display(description="content")
    def content_text(self, obj: ConversationHistory) -> str:
        return format_html('<pre class="message-text">{}</pre>', visible(obj.content))

    @admin.display(description="tool calls")
    def tool_calls_json(self, obj: ConversationHistory) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.tool_calls)) if obj.tool_calls else "-"

    @admin.display(description="metadata")
    def metadata_json(self, obj: ConversationHistory) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.metadata)) if obj.metadata else "-"

    def transcript_view(self, request: HttpRequest, conversation_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        conversation_id = unquote(conversation_id)
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
        page = paginator.get_page(request.GET.get("page"))
        customer_id = conversation.customer_id if conversation else (page[0].customer_id if page else None)
        changelist = reverse("admin:conversations_conversationhistory_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
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
        return TemplateResponse(request, "admin/conversations/conversationhistory/transcript.html", context)


def live_threads(conversation_id: Any) -> QuerySet[LiveThread]:
    """The live mirror's rows of a conversation still in Redis (its keys not yet expired)."""
    return LiveThread.objects.filter(conversation_id=conversation_id).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("live", "Live (still in Redis)"), ("archived", "Archived")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(live=True)
        if self.value() == "archived":
            return queryset.filter(live=False)
        return queryset


def _tool_names(tool_calls: Any) -> list[str]:
    if not isinstance(tool_calls, list):
        return ["?"]
    return [str(call.get("name", "?")) if isinstance(call, dict) else "?" for call in tool_calls]


@admin.register(ArchivedConversation)
class ArchivedConversationAdmin(ReadOnlyAdmin):
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
    def state(self, obj: ArchivedConversation) -> str:
        return "live" if obj.live else "archived"

    @admin.display(description="transcript")
    def transcript(self, obj: ArchivedConversation) -> str:
        return format_html('<a href="{}">Transcript</a>', transcript_url(obj.conversation_id))

    @admin.display(description="summary")
    def summary_text(self, obj: ArchivedConversation) -> str:
        return format_html('<pre class="message-text">{}</pre>', visible(obj.summary)) if obj.summary else "-"

    first_message = local_time_column("first_message_at", "first message", sortable=True)

    last_message = local_time_column("last_message_at", "last message", sortable=True)

    first_archived = local_time_column("first_archived_at", "first archived")

    last_archived = local_time_column("last_archived_at", "last archived")


@admin.register(ArchiveRun)
class ArchiveRunAdmin(ReadOnlyAdmin):
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

    @admin.display(description="error messages")
    def error_text(self, obj: ArchiveRun) -> str:
        return format_html("<pre>{}</pre>", obj.error_messages) if obj.error_messages else "-"


def describe_raw_value(raw: bytes | memoryview | None) -> tuple[str, str]:
    """(what it is, how to show it): printable UTF-8 as text, anything else as a hex dump;
    at most RAW_VALUE_SHOWN_BYTES of it. The caller escapes both."""
    data = bytes(raw or b"")
    shown = data[:RAW_VALUE_SHOWN_BYTES]
    cut = f", first {len(shown):,} shown" if len(shown) < len(data) else ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _readable(text):
        if cut:
            text = shown.decode("utf-8", errors="ignore")
        return f"UTF-8 text, {len(data):,} bytes{cut}", text
    return f"binary, {len(data):,} bytes{cut}, as hex", hex_dump(shown)


def _readable(text: str) -> bool:
    return CONTROL_CHARACTERS.search(text) is None


def hex_dump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), HEX_LINE_BYTES):
        chunk = data[offset : offset + HEX_LINE_BYTES]
        ascii_part = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<{HEX_LINE_BYTES * 3 - 1}}  |{ascii_part}|")
    return "\n".join(lines)


@admin.register(QuarantinedCheckpoint)
class QuarantinedCheckpointAdmin(ReadOnlyAdmin):
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
        text = " ".join(obj.error.split())
        return text[: EXCERPT_CHARS - 1] + "…" if len(text) > EXCERPT_CHARS else text

    @admin.display(description="error")
    def error_text(self, obj: QuarantinedCheckpoint) -> str:
        return format_html("<pre>{}</pre>", obj.error)

    @admin.display(description="raw value")
    def raw_value_shown(self, obj: QuarantinedCheckpoint) -> str:
        what, shown = describe_raw_value(obj.raw_value)
        return format_html('<p>{}</p><pre class="raw-value">{}</pre>', what, shown)
