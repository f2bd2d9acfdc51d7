"""The message search: what the support view's search box finds in conversation_history.

Scale: only lookups an index serves. Ids are plain `=` on customer_id and conversation_id
(the (customer_id, timestamp) and (conversation_id, position) indexes); words are a
full-text search through the GIN index of migration 0002.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.contrib.postgres.search import SearchQuery, SearchVectorField
from django.db import connections
from django.db.models import F, Func, Q, QuerySet

from conversations.models import ConversationHistory

# `customer:ID` and `conversation:ID` in a search, beside words or alone.
SEARCH_ID = re.compile(r"(?:^|\s)(customer|conversation):(\S+)")


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


def search_messages(
    queryset: QuerySet[ConversationHistory], term: str, id_lookups: Iterable[str]
) -> tuple[QuerySet[ConversationHistory], bool]:
    """(the messages `term` finds, whether it found them by exact ids alone). A customer or
    conversation id that exists, looked up with `id_lookups`, gives exactly its messages;
    `customer:ID` or `conversation:ID` beside words searches within them; anything else is
    a word search."""
    ids = {kind: value for kind, value in SEARCH_ID.findall(term)}
    words = SEARCH_ID.sub(" ", term).strip()
    if ids:
        if "customer" in ids:
            queryset = queryset.filter(customer_id=ids["customer"])
        if "conversation" in ids:
            queryset = queryset.filter(conversation_id=ids["conversation"])
        return (filter_by_words(queryset, words) if words else queryset), not words
    exact = Q()
    for lookup in id_lookups:
        exact |= Q(**{lookup: term})
    if queryset.model._default_manager.filter(exact).exists():
        return queryset.filter(exact), True
    return filter_by_words(queryset, term), False
