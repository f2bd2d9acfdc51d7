"""What every support list shares: ReadOnlyAdmin, the base of each admin, and its change
list, which orders, filters and pages a table of millions of rows through indexes only.

Safety design: ReadOnlyAdmin refuses add, change and delete for everyone, superusers
included, so purging stays the commands' job; support staff get the `view` permissions
through the `support` group (migration 0003). A lookup, cursor or filter value typed into
the URL that the admin does not declare is a 400, never a scan of the whole table.

Scale: facets are off, the paginator never counts the whole table
(conversations/paginators.py), and a list is sorted only by columns an index serves.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import PAGE_VAR, SEARCH_VAR, ChangeList
from django.core.exceptions import BadRequest
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from conversations.paginators import ArchivePaginator, parse_cursor

# The paginator's cursor in a "next" link (conversations/paginators.py).
AFTER_VAR = "after"
# The lookups Django's own list filters put in the URL (dates: a range; choices: exact).
FILTER_LOOKUPS = ("gte", "lt", "exact", "isnull")


class ArchiveChangeList(ChangeList):
    """Orders every list so that an index serves it and no two rows tie (a row then appears on
    exactly one page), and shows the page the paginator served."""

    def _get_deterministic_ordering(self, ordering: list[Any]) -> list[Any]:
        ordering = super()._get_deterministic_ordering(ordering)  # type: ignore[misc]  # Django's own hook, unstubbed
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


ModelT = TypeVar("ModelT", bound=Model)


class ReadOnlyAdmin(admin.ModelAdmin[ModelT]):
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
            request.GET, request.page_after = params, after  # type: ignore[assignment,attr-defined]
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
