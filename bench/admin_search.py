#!/usr/bin/env python
"""The support view at scale: admin search on a big conversation_history.

    python bench/admin_search.py                 (2,000,000 messages, ~50,000 customers)
    python bench/admin_search.py --rows 2000     (CI: keeps it working, in seconds)

1. Creates its own database (bench_admin: dropped and created; BENCH_PG_URL names the
   server), migrates conversations to 0001, and seeds N messages in one
   INSERT ... SELECT generate_series: conversations of 4 to 37 messages (about 20), two
   conversations per customer, human / ai / tool turns with order numbers and tool calls,
   spread over 90 days; plus their archived_conversation rows.
2. Runs the remaining migrations on the loaded table, so the time to build the full-text
   GIN index (0002, CREATE INDEX CONCURRENTLY) is measured too, then VACUUM ANALYZE.
3. Logged in as a member of the `support` group (Django's test Client, in process, so the
   time is the server's: middleware, ORM, SQL, templates), requests the changelist and
   the transcript --requests times each, with different customers / conversations, and
   reports median and p95, SQL time and query count per request.
4. EXPLAIN (ANALYZE, BUFFERS) of the SQL the customer search ran, to show the indexes used.
It prints a table and writes JSON to bench/results/admin_search_<rows>.json, then drops
the database (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_DB_NAME", "bench_admin")
MESSAGES_PER_CUSTOMER = 40  # two conversations of about 20 messages
WARM_UP = 3
# From this size on, a customer search that does not use the customer index is a failure.
INDEX_CHECK_ROWS = 100_000

HUMAN = [
    "Hi, I have a question about my order",
    "My parcel has not arrived yet, it was supposed to come on Monday",
    "Can I change the delivery address for order",
    "I would like a refund for order",
    "The app shows an error when I try to pay with my card",
    "How do I reset my password? The email never arrives",
    "Is the blue jacket available in size M?",
    "I was charged twice for order",
    "Can I book an appointment for tomorrow afternoon?",
    "Hola, quería saber el estado de mi pedido",
    "Thanks, that solved it!",
    "Where can I find the invoice for order",
]
AI = [
    "Thanks for reaching out! Let me check that for you.",
    "I have found your order. It left our warehouse yesterday and should arrive within 2 working days.",
    "I am sorry for the trouble. I have issued a refund to your original payment method; it takes 3 to 5 days.",
    "You can change the address until the parcel is handed to the carrier. I have updated it for you.",
    "Please try again with the latest version of the app; if the payment still fails, use another card.",
    "I have sent a new password reset link. Please check your spam folder too.",
    "Yes, it is in stock in size M. Would you like me to reserve one?",
    "I can see two charges; the second one is a pre-authorisation and will be released automatically.",
    "Your appointment is booked for tomorrow at 17:00. You will get a reminder by SMS.",
    "Claro, tu pedido está en reparto y llegará hoy antes de las 20:00.",
]

SEED_SQL = """
INSERT INTO conversation_history (
    conversation_id, customer_id, "timestamp", role, content, content_blocks, message_id, position,
    name, tool_calls, tool_call_id, metadata, message_key, source, thread_id, checkpoint_ns,
    checkpoint_id, archived_at)
SELECT
    'conv-' || lpad(c::text, 7, '0'),
    'cust-' || lpad(((c * 7919) %% %(customers)s)::text, 6, '0'),
    now() - interval '1 day' - ((c * 104729) %% 7776000) * interval '1 second' + pos * interval '45 seconds',
    kind,
    CASE kind
        WHEN 'human' THEN (%(human)s::text[])[1 + (c * 13 + pos * 7) %% %(n_human)s]
                          || ' ORD-' || lpad(((c * 37) %% 1000000)::text, 6, '0')
        WHEN 'tool' THEN '{"order_id": "ORD-' || lpad(((c * 37) %% 1000000)::text, 6, '0')
                          || '", "status": "shipped", "carrier": "Correos", "eta_days": ' || (c %% 5) || '}'
        WHEN 'ai' THEN CASE WHEN (c + pos) %% 10 = 2 THEN ''
                            ELSE (%(ai)s::text[])[1 + (c * 17 + pos * 3) %% %(n_ai)s] END
    END,
    NULL,
    'msg-' || c || '-' || pos,
    pos,
    CASE kind WHEN 'tool' THEN 'lookup_order' END,
    CASE WHEN kind = 'ai' AND (c + pos) %% 10 = 2 THEN
        jsonb_build_array(jsonb_build_object('name', 'lookup_order', 'id', 'call-' || c || '-' || pos,
            'args', jsonb_build_object('order_id', 'ORD-' || lpad(((c * 37) %% 1000000)::text, 6, '0'))))
    END,
    CASE kind WHEN 'tool' THEN 'call-' || c || '-' || (pos - 1) END,
    '{}'::jsonb,
    'msg-' || c || '-' || pos,
    'plain',
    'conv-' || lpad(c::text, 7, '0'),
    '',
    'cp-' || c,
    now()
FROM generate_series(0::bigint, %(conversations)s) AS c,
     LATERAL generate_series(0, 3 + (c * 31) %% 34) AS pos,
     LATERAL (SELECT CASE
         WHEN pos %% 2 = 0 THEN 'human'
         WHEN (c + pos) %% 10 = 3 THEN 'tool'
         ELSE 'ai' END AS kind) AS k
LIMIT %(rows)s
"""

# One heavy customer: 15,000 messages in 30 conversations whose messages share their
# conversation's timestamp (only a unique key orders them: paging must still show each once).
HEAVY_SQL = """
INSERT INTO conversation_history (
    conversation_id, customer_id, "timestamp", role, content, message_id, position, metadata,
    message_key, source, thread_id, checkpoint_ns, checkpoint_id, archived_at)
SELECT 'conv-heavy-' || (i / 500), 'cust-heavy', now() - interval '2 days' - (i / 500) * interval '1 hour',
       CASE WHEN i %% 2 = 0 THEN 'human' ELSE 'ai' END,
       CASE WHEN i %% 2 = 0 THEN 'Hola, quería saber el estado de mi pedido ORD-' || i ELSE 'Your order is on its way.' END,
       'heavy-' || i, i %% 500, '{}'::jsonb, 'heavy-' || i, 'plain', 'conv-heavy-' || (i / 500), '', 'cp-heavy', now()
FROM generate_series(0, 14999) AS i
"""

# The customers, conversations and orders the searches pick from: not the heavy customer.
ORDINARY = "WHERE customer_id <> 'cust-heavy'"

CONVERSATIONS_SQL = """
INSERT INTO archived_conversation (conversation_id, customer_id, thread_id, summary, first_message_at,
    last_message_at, message_count, first_archived_at, last_archived_at)
SELECT conversation_id, min(customer_id), min(thread_id),
       'Customer asked about an order; the assistant checked its status and answered.',
       min("timestamp"), max("timestamp"), count(*), now(), now()
FROM conversation_history GROUP BY conversation_id
"""


def database_url(name: str) -> str:
    parts = urlsplit(PG_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def fresh_database(name: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(name: str) -> None:
    os.environ["DATABASE_URL"] = database_url(name)
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key")
    os.environ["DJANGO_SETTINGS_MODULE"] = "archive_site.settings"
    sys.path.insert(0, str(ROOT))
    import django
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()  # lets the test Client in (ALLOWED_HOSTS) and keeps mail local


def timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def seed(rows: int) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection

    customers = max(1, rows // MESSAGES_PER_CUSTOMER)
    conversations = rows // 20 + 1
    params = {
        "customers": customers,
        "conversations": conversations,
        "rows": rows,
        "human": HUMAN,
        "n_human": len(HUMAN),
        "ai": AI,
        "n_ai": len(AI),
    }
    figures: dict[str, Any] = {"customers": customers}
    figures["migrate_0001_s"] = timed(lambda: call_command("migrate", "conversations", "0001", verbosity=0))
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        figures["seed_messages_s"] = timed(lambda: cursor.execute(SEED_SQL, params))
        cursor.execute(HEAVY_SQL, {})
        figures["seed_conversations_s"] = timed(lambda: cursor.execute(CONVERSATIONS_SQL))
    figures["migrate_rest_s"] = timed(lambda: call_command("migrate", verbosity=0))
    with connection.cursor() as cursor:
        figures["vacuum_analyze_s"] = timed(lambda: cursor.execute("VACUUM ANALYZE"))
        cursor.execute("SELECT count(*), count(DISTINCT customer_id) FROM conversation_history")
        figures["messages"], figures["distinct_customers"] = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM archived_conversation")
        (figures["conversations"],) = cursor.fetchone()
        cursor.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('conversation_history')), "
            "pg_size_pretty(pg_relation_size('conv_history_content_fts'))"
        )
        figures["table_size"], figures["fts_index_size"] = cursor.fetchone()
    return figures


def support_client() -> Any:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.create_user("bench-agent", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    client = Client()
    client.force_login(user)
    return client


def sample(sql: str, n: int) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({sql}) AS population ORDER BY random() LIMIT %s", [n])
        return [row[0] for row in cursor.fetchall()]


def shown_rows(response: Any) -> int:
    """Rows the page lists: changelist results or transcript messages."""
    context = response.context
    if "cl" in context:
        return len(context["cl"].result_list)
    return len(context["entries"])


def measure(client: Any, label: str, urls: list[str], expect_rows: bool = True) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    warm_up, measured = urls[:WARM_UP], urls[WARM_UP:]
    for url in warm_up:
        client.get(url)
    server, sql, counts = [], [], []
    for url in measured:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            server.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{label}: {url} answered {response.status_code}")
        if expect_rows and not shown_rows(response):
            raise SystemExit(f"{label}: {url} shows nothing")
        sql.append(sum(float(q["time"]) for q in queries.captured_queries))
        counts.append(len(queries.captured_queries))
    return {
        "what": label,
        "requests": len(measured),
        "median_ms": statistics.median(server) * 1000,
        "p95_ms": percentile(server, 95) * 1000,
        "max_ms": max(server) * 1000,
        "sql_median_ms": statistics.median(sql) * 1000,
        "queries": max(counts),
    }


def by_next(client: Any, url: str, page: int) -> str:
    """The address of `page` as its "next" links reach it (with the previous page's cursor), or of
    the last page when the list is shorter (CI's tiny tables)."""
    for _ in range(page - 1):
        following = client.get(url).context["cl"].next_url
        if following is None:
            break
        url = url.split("?")[0] + following
    return url


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the 19th of 20 values for p95."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def explain_customer_search(client: Any, customer: str, changelist: str) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of every query the customer search ran on conversation_history."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get(changelist, {"q": customer})
    statements = [q["sql"] for q in queries.captured_queries if 'FROM "conversation_history"' in q["sql"]]
    plans = []
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement.replace("%", "%%"))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            plans.append(
                {
                    "sql": statement,
                    "plan": plan,
                    "uses_customer_index": "conv_history_customer" in plan,
                    "seq_scan": "Seq Scan" in plan,
                }
            )
    return plans


def machine() -> dict[str, Any]:
    from django import get_version
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg_version,) = cursor.fetchone()
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "django": get_version(),
        "postgresql": pg_version,
        "platform": platform.platform(),
    }


def print_table(report: dict[str, Any]) -> None:
    seeding = report["seeding"]
    print(
        f"\n{seeding['messages']:,} messages, {seeding['conversations']:,} conversations, "
        f"{seeding['distinct_customers']:,} customers; table {seeding['table_size']}, "
        f"full-text index {seeding['fts_index_size']}"
    )
    print(
        f"seed {seeding['seed_messages_s']:.1f}s + conversations {seeding['seed_conversations_s']:.1f}s, "
        f"migrations on the loaded table (GIN index) {seeding['migrate_rest_s']:.1f}s, "
        f"VACUUM ANALYZE {seeding['vacuum_analyze_s']:.1f}s"
    )
    print(f"\n{'request':<34} {'n':>4} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'SQL ms':>7} {'queries':>8}")
    for row in report["results"]:
        print(
            f"{row['what']:<34} {row['requests']:>4} {row['median_ms']:>10.1f} {row['p95_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f} {row['sql_median_ms']:>7.1f} {row['queries']:>8}"
        )
    print("\nEXPLAIN ANALYZE of the customer search:")
    for entry in report["explain"]:
        print("\n" + entry["sql"][:300] + ("..." if len(entry["sql"]) > 300 else ""))
        print(entry["plan"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="messages to seed (default 2,000,000)")
    parser.add_argument("--requests", type=int, default=20, help="measured requests per kind (default 20)")
    parser.add_argument("--database", default=DB_NAME, help=f"database to create and drop (default {DB_NAME})")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON")
    parser.add_argument("--keep", action="store_true", help="leave the database for a look afterwards")
    args = parser.parse_args()
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    if not args.database.startswith("bench"):
        parser.error("--database must start with 'bench': this script drops it")

    fresh_database(args.database)
    try:
        setup_django(args.database)
        from django.db import connections
        from django.urls import reverse

        from conversations.admin.transcript import transcript_url

        started_at = datetime.now(timezone.utc).isoformat()
        conditions = machine()
        seeding = seed(args.rows)
        client = support_client()
        n = args.requests
        changelist = reverse("admin:conversations_conversationhistory_changelist")
        customers = sample(f"SELECT DISTINCT customer_id FROM archived_conversation {ORDINARY}", n + WARM_UP)
        conversations = sample(f"SELECT conversation_id FROM archived_conversation {ORDINARY}", n + WARM_UP)
        orders = sample(
            "SELECT DISTINCT 'ORD-' || lpad(((substr(conversation_id, 6)::int * 37) %% 1000000)::text, 6, '0') "
            f"FROM archived_conversation {ORDINARY}",
            n + WARM_UP,
        )
        deep = max(2, min(1000, args.rows // 2000))  # a page deep into the list (1,000 at 2,000,000 rows)
        week_ago = quote_plus((datetime.now(timezone.utc) - timedelta(days=7)).isoformat())
        rows = [
            measure(client, "search customer_id", [f"{changelist}?q={c}" for c in customers]),
            measure(client, "search conversation_id", [f"{changelist}?q={c}" for c in conversations]),
            measure(client, "word search (an order number)", [f"{changelist}?q={o}" for o in orders]),
            measure(client, "word search (common: refund)", [f"{changelist}?q=refund"] * (n + WARM_UP)),
            measure(client, "list, no filter, page 1", [changelist] * (n + WARM_UP)),
            measure(client, "list, role=tool", [f"{changelist}?role=tool"] * (n + WARM_UP)),
            measure(client, "transcript", [transcript_url(c) for c in conversations]),
            measure(client, "heavy customer (15,000 rows)", [f"{changelist}?q=cust-heavy"] * (n + WARM_UP)),
            measure(client, "heavy customer, last page", [f"{changelist}?q=cust-heavy&p=150"] * (n + WARM_UP)),
            measure(client, "customer:ID and a word", [f"{changelist}?q=customer:{c}+order" for c in customers]),
            measure(client, 'phrase "estado de mi pedido"', [f"{changelist}?q=%22estado+de+mi+pedido%22"] * (n + WARM_UP)),
            measure(client, "hola OR order", [f"{changelist}?q=hola+OR+order"] * (n + WARM_UP)),
            measure(client, "word search, page 100", [f"{changelist}?q=refund&p=100"] * (n + WARM_UP)),
            measure(client, "word search, page 100 by next", [by_next(client, f"{changelist}?q=refund", 100)] * (n + WARM_UP)),
            measure(client, "list, page 1,000 by next", [by_next(client, changelist, deep)] * (n + WARM_UP)),
            measure(client, "list, role=system (none)", [f"{changelist}?role=system"] * (n + WARM_UP), expect_rows=False),
            measure(client, "list, sorted by conversation", [f"{changelist}?o=2"] * (n + WARM_UP)),
            measure(client, "list, sorted by customer", [f"{changelist}?o=1"] * (n + WARM_UP)),
            measure(client, "list, ?o=3 (not sortable)", [f"{changelist}?o=3"] * (n + WARM_UP)),
            measure(client, "list, last 7 days", [f"{changelist}?timestamp__gte={week_ago}"] * (n + WARM_UP)),
            measure(client, f"list, page {deep:,}", [f"{changelist}?p={deep}"] * (n + WARM_UP)),
        ]
        explain = explain_customer_search(client, customers[0], changelist)
        conditions["load_average_after"] = os.getloadavg()
        report = {
            "benchmark": "admin_search",
            "started_at": started_at,
            "rows_requested": args.rows,
            "machine": conditions,
            "seeding": seeding,
            "results": rows,
            "explain": explain,
        }
        connections.close_all()
    finally:
        if not args.keep:
            drop_database(args.database)
    print_table(report)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"admin_search_{args.rows}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    # Tiny tables (CI's --rows 2000) fit in a few pages and are rightly scanned whole.
    if args.rows >= INDEX_CHECK_ROWS and not all(e["uses_customer_index"] and not e["seq_scan"] for e in explain):
        raise SystemExit("the customer search did not use the customer index")


if __name__ == "__main__":
    main()
