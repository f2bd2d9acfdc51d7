"""A paginator for tables with millions of rows.

Django's Paginator runs COUNT(*) over the whole filtered queryset on every changelist
page; on conversation_history that scan costs more than the page itself. On PostgreSQL
this one never counts more than COUNT_CAP rows: an unfiltered list takes the planner's
row estimate for the table (pg_class.reltuples, kept fresh by autovacuum), a filtered one
counts at most COUNT_CAP + 1 rows and, when there are more, takes the planner's estimate
for the query. Such counts are flagged `estimated` so the page can say so. Elsewhere
(SQLite) it counts as Django does.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

# Below this many rows an exact count is cheap enough to run on every page.
COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """Exact counts up to COUNT_CAP rows, PostgreSQL's estimate beyond."""

    estimated: bool = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return super().count
        queryset = queryset.order_by()
        if self._unfiltered(queryset):
            rows = self._table_estimate(queryset)
            if rows > COUNT_CAP:
                self.estimated = True
                return rows
        capped = queryset[: COUNT_CAP + 1].count()
        if capped <= COUNT_CAP:
            return capped
        self.estimated = True
        return max(capped, self._query_estimate(queryset))

    @staticmethod
    def _unfiltered(queryset: QuerySet[Any]) -> bool:
        query = queryset.query
        return not query.where and not query.distinct and query.low_mark == 0 and query.high_mark is None

    @staticmethod
    def _table_estimate(queryset: QuerySet[Any]) -> int:
        """The planner's row count for the table; -1 when it was never analysed."""
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connections[queryset.db].ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else -1

    @staticmethod
    def _query_estimate(queryset: QuerySet[Any]) -> int:
        plan = json.loads(queryset.explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])
