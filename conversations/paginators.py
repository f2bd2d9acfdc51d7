"""A paginator for tables with millions of rows, where every row can still be reached.

Django's Paginator runs COUNT(*) over the whole filtered queryset on every changelist page,
and then trusts that count to say which pages exist. On conversation_history a full count
costs more than the page itself, and an estimate in its place offers pages that are empty
or hides rows that exist. This one counts exactly where that is cheap and never lets the
count decide what can be reached:

- `exact=True` (the admin passes it for a customer or conversation id search, which an index
  counts in milliseconds), or any list of at most COUNT_CAP rows: an exact count, and pages
  as Django makes them; a page number past the end shows the last page.
- Longer lists (on PostgreSQL): the count stops at COUNT_CAP ("more than 10,000"), or is
  the planner's estimate for the whole table ("about 2,015,121"), and is labelled so. A page
  is read as per_page + 1 rows: the extra row says whether a next page exists, so the links
  reach one page further each time, to the very last row, and a page number past the end
  shows an empty page of the same search (never the whole archive). The "next" link carries
  a cursor (the last row's time and id), so a page reached by it is read from there, not
  from an offset: as cheap at page 1,000 as at page 1.
Elsewhere (SQLite) it counts as Django does.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any, cast

from django.core.paginator import Page, PageNotAnInteger, Paginator
from django.db import OperationalError, connections, transaction
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

# Up to this many rows an exact count is cheap enough to run on every page.
COUNT_CAP = 10_000
# A page number beyond this is read as this one (an OFFSET PostgreSQL can take).
MAX_PAGE = 10_000_000
# The first pages of a long list try walking the index of its order for this long (_rows).
WALK_PAGES = 10
WALK_TIMEOUT_MS = 150


class ArchivePaginator(Paginator[Any]):
    """Exact counts where cheap, labelled counts otherwise, and every row reachable."""

    def __init__(
        self, object_list: Any, per_page: int, *args: Any, exact: bool = False, after: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        self.exact = exact
        self.after = after  # the cursor of the previous page's last row (see page())
        self.next_after: str | None = None  # this page's cursor, for the link to the next
        self._estimated = False
        self._capped = False
        self.past_end = False  # the page asked for lies past the last row
        self._reached = 0  # the pages known to exist, from the pages read

    @property
    def estimated(self) -> bool:
        """The count is the planner's estimate for the whole table."""
        return self.count >= 0 and self._estimated

    @property
    def capped(self) -> bool:
        """The count stopped at COUNT_CAP."""
        return self.count >= 0 and self._capped

    @property
    def open_ended(self) -> bool:
        return self.estimated or self.capped

    @property
    def label(self) -> str:
        """The count as the list shows it: "15,000", "more than 10,000", "about 2,015,121"."""
        if self.capped:
            return f"more than {COUNT_CAP:,}"
        if self.estimated:
            return f"about {self.count:,}"
        return f"{self.count:,}"

    @property
    def singular(self) -> bool:
        return self.count == 1 and not self.open_ended

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return int(super().count)
        queryset = queryset.order_by()
        if self.exact:
            return queryset.count()
        if _unfiltered(queryset):
            rows = _table_estimate(queryset)
            if rows > COUNT_CAP:
                self._estimated = True
                return rows
        capped = queryset[: COUNT_CAP + 1].count()
        self._capped = capped > COUNT_CAP
        return capped

    @property
    def num_pages(self) -> int:
        if not self.open_ended:
            return max(1, math.ceil(self.count / self.per_page)) if self.count or self.allow_empty_first_page else 0
        return max(self._reached, 1)

    def validate_number(self, number: Any) -> int:
        try:
            asked = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        asked = min(max(asked, 1), MAX_PAGE)  # a page before the first is the first
        if not self.open_ended and asked > self.num_pages:
            return self.num_pages  # past the end: the last page, of the same search
        return asked

    def page(self, number: Any) -> Page[Any]:
        number = self.validate_number(number)
        if not self.open_ended:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        keyset = self._keyset()
        rows = self._rows(bottom, keyset)
        self.past_end = not rows and number > 1
        self._reached = number + (len(rows) > self.per_page)
        if len(rows) > self.per_page and self._newest_first():
            last = rows[self.per_page - 1]
            self.next_after = cursor(last.timestamp, last.pk)
        return Page(rows[: self.per_page], number, self)

    @property
    def _queryset(self) -> QuerySet[Any]:
        # What an open-ended list is (count() keeps lists that are not to Django's own pages).
        return cast(QuerySet[Any], self.object_list)

    def _newest_first(self) -> bool:
        queryset = self.object_list
        return isinstance(queryset, QuerySet) and tuple(dict.fromkeys(queryset.query.order_by)) in NEWEST_FIRST

    def _keyset(self) -> QuerySet[Any] | None:
        """The rows after the cursor, when the list is newest first and one was given: page N
        reached by "next" then costs what the first page costs, at any depth (an OFFSET reads
        and sorts every row before the page)."""
        if self.after is None or not self._newest_first():
            return None
        when, pk = parse_cursor(self.after)
        return self._queryset.filter(Q(timestamp__lt=when) | Q(timestamp=when, pk__lt=pk))

    def _rows(self, bottom: int, keyset: QuerySet[Any] | None = None) -> list[Any]:
        """The page's rows and one more. A list of more than COUNT_CAP rows is dense enough that
        walking the index of its order (newest first) finds a page sooner than collecting every
        match and sorting them, which is what the planner picks when it misjudges how many
        rows match (a phrase search; the figures are in docs/performance.md, *Admin search*).
        So the first pages try that walk, bounded by WALK_TIMEOUT_MS, and fall back to the
        planner's own plan."""
        if keyset is not None:
            window, bottom = keyset[: self.per_page + 1], 0
        else:
            window = self._queryset[bottom : bottom + self.per_page + 1]
        if not (self.capped and bottom < WALK_PAGES * self.per_page):  # capped: a PostgreSQL queryset
            return list(window)
        database = self._queryset.db
        connection = connections[database]
        try:
            with transaction.atomic(using=database):
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL enable_bitmapscan = off")
                    cursor.execute("SET LOCAL enable_seqscan = off")
                    cursor.execute(f"SET LOCAL statement_timeout = {int(WALK_TIMEOUT_MS)}")
                    rows = list(window)
                    cursor.execute("RESET enable_bitmapscan; RESET enable_seqscan; RESET statement_timeout")
                return rows
        except OperationalError:  # the walk took too long: the matches are sparse among the newest rows
            return list(window)


EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
MICROSECOND = timedelta(microseconds=1)
# The orders a cursor can continue (the archive's lists, newest first, ties by primary key).
NEWEST_FIRST = {("-timestamp", "-pk"), ("-timestamp", "-id")}


def cursor(when: datetime, pk: int) -> str:
    """A row's place in a newest-first list: its time in microseconds since the epoch (integer
    arithmetic, so parse_cursor gives back the very same time), and its id."""
    return f"{(when - EPOCH) // MICROSECOND}_{pk}"


def parse_cursor(text: str) -> tuple[datetime, int]:
    """The inverse of cursor(); ValueError when `text` is not one."""
    micros, _, pk = text.partition("_")
    return EPOCH + timedelta(microseconds=int(micros)), int(pk)


def _unfiltered(queryset: QuerySet[Any]) -> bool:
    query = queryset.query
    return not query.where and not query.distinct and query.low_mark == 0 and query.high_mark is None


def _table_estimate(queryset: QuerySet[Any]) -> int:
    """The planner's row count for the table; -1 when it was never analysed."""
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connections[queryset.db].ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else -1
