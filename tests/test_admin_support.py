"""The support view at its edges: every result reachable exactly once, honest counts, a
search that stays a search, malformed input, safe display of disguising characters and huge
messages, customer-and-words searches, and login throttling. Real PostgreSQL."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from conversations import paginators
from conversations.models import ConversationHistory
from tests.test_admin import BASE, changelist, client_for, message, support, support_user, transcript  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

PER_PAGE = 100


def ids_on(response: Any) -> list[int]:
    assert response.status_code == 200, response.status_code
    return [row.pk for row in response.context["cl"].result_list]


def count_text(response: Any) -> str:
    return re.search(r'<span class="result-count">([^<]*)</span>', response.content.decode()).group(1).strip()


def same_time_rows(n: int, customer_id: str = "cust-heavy", content: str = "hola pedido") -> list[int]:
    """`n` messages of one customer sharing one timestamp: only a unique key orders them."""
    rows = ConversationHistory.objects.bulk_create(
        ConversationHistory(
            conversation_id=f"conv-{customer_id}-{i // 50}", customer_id=customer_id, timestamp=BASE, role="human",
            content=f"{content} {i}", position=i % 50, message_key=f"k{i}", source="plain",
            thread_id=f"t{i // 50}", archived_at=BASE,
        )
        for i in range(n)
    )
    return [row.pk for row in rows]


def every_page(client: Client, params: dict[str, str]) -> tuple[list[int], int]:
    """Follow the pages as the links offer them, one after the other: the ids seen, and the pages."""
    seen, number = [], 1
    while True:
        response = client.get(changelist("conversationhistory"), {**params, "p": str(number)})
        seen += ids_on(response)
        if not response.context["cl"].paginator.page(number).has_next():
            return seen, number
        number += 1


@pytest.mark.parametrize("order", ["", "0", "-0", "1", "-1", "2", "-2", "3"])
def test_paging_a_customer_reaches_every_row_exactly_once_in_every_order(support: Client, order: str) -> None:
    expected = same_time_rows(250)
    message("conv-other", 0, "hola pedido", customer_id="cust-other")
    params = {"q": "cust-heavy", **({"o": order} if order else {})}
    seen, pages = every_page(support, params)
    assert pages == 3 and len(seen) == 250 and sorted(seen) == sorted(expected)
    assert count_text(support.get(changelist("conversationhistory"), params)) == "250 messages"


def test_only_declared_columns_sort(support: Client) -> None:
    from django.test.utils import CaptureQueriesContext

    same_time_rows(3)
    with CaptureQueriesContext(connection) as queries:
        support.get(changelist("conversationhistory"), {"o": "3"})  # position: no index serves it
    pages = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"] and "conversation_history" in q["sql"]]
    assert pages and all('"position"' not in sql.split("ORDER BY")[1] for sql in pages)


def test_a_page_past_the_end_stays_within_the_search(support: Client) -> None:
    expected = same_time_rows(250)
    message("conv-other", 0, "hola", customer_id="cust-other")
    response = support.get(changelist("conversationhistory"), {"q": "cust-heavy", "p": "150"})
    assert response.status_code == 200  # not a redirect to the whole archive
    assert set(ids_on(response)) <= set(expected) and len(ids_on(response)) == 50  # the last page
    assert response.context["cl"].page_num == 3
    for page in ("0", "-4", "99999999999999999999999", "x"):
        assert set(ids_on(support.get(changelist("conversationhistory"), {"q": "cust-heavy", "p": page}))) <= set(expected)


def test_a_long_word_search_is_labelled_and_paged_to_its_last_row(support: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paginators, "COUNT_CAP", 120)
    expected = same_time_rows(260, customer_id="cust-a", content="estado de mi pedido")
    message("conv-x", 0, "nothing to see", customer_id="cust-b")
    params = {"q": '"estado de mi pedido"'}
    first = support.get(changelist("conversationhistory"), params)
    assert count_text(first) == "more than 120 messages"
    seen, pages = every_page(support, params)
    assert pages == 3 and sorted(seen) == sorted(expected)
    past = support.get(changelist("conversationhistory"), {**params, "p": "40"})
    assert ids_on(past) == [] and "this page is past the end of the list" in past.content.decode()


def test_the_unfiltered_list_says_its_count_is_an_estimate(support: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paginators, "COUNT_CAP", 100)
    same_time_rows(250)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversation_history")
    response = support.get(changelist("conversationhistory"))
    assert count_text(response) == "about 250 messages"
    assert "Show all" not in response.content.decode()


def test_one_message_is_counted_in_the_singular(support: Client) -> None:
    message("conv-1", 0, "hola", customer_id="cust-single")
    assert count_text(support.get(changelist("conversationhistory"), {"q": "cust-single"})) == "1 message"


@pytest.mark.parametrize(
    "params",
    [{"content__icontains": "x"}, {"metadata__note__icontains": "x"}, {"timestamp__year": "2026"}, {"position__gt": "1"}],
)
def test_lookups_typed_into_the_url_are_refused(support: Client, params: dict[str, str]) -> None:
    message("conv-1", 0, "hola")
    assert support.get(changelist("conversationhistory"), params).status_code == 400


def test_the_declared_filters_still_work(support: Client) -> None:
    kept = message("conv-1", 0, "hola", role="ai")
    message("conv-1", 1, "adios", role="human", at=BASE - timedelta(days=400))
    start = (BASE - timedelta(days=1)).isoformat()
    assert ids_on(support.get(changelist("conversationhistory"), {"role": "ai", "timestamp__gte": start})) == [kept.pk]
    assert support.get(changelist("archiverun"), {"status__exact": "healthy"}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/admin/conversations/conversationhistory/?role=%00",
        "/admin/conversations/conversationhistory/?q=a%00b",
        "/admin/conversations/conversationhistory/transcript/%00/",
        "/admin/conversations/conversationhistory/?timestamp__gte=not-a-date",
    ],
)
def test_malformed_input_is_a_400(support: Client, url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert support.get(url).status_code == 400


def test_every_server_error_is_logged(support: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from conversations.admin.transcript import TranscriptEntry

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the transcript broke")

    message("conv-1", 0, "hola")
    monkeypatch.setattr(TranscriptEntry, "from_row", broken)
    support.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="django.request"):
        assert support.get(transcript("conv-1")).status_code == 500
    logged = [r for r in caplog.records if r.name == "django.request" and r.levelno == logging.ERROR]
    assert logged and "the transcript broke" in str(logged[0].exc_info[1])


def test_disguising_characters_are_shown_as_marks(support: Client) -> None:
    message("conv-bidi", 0, "Abre el fichero gnp\u202e.exe ya\u0007")
    listing = support.get(changelist("conversationhistory"), {"q": "conv-bidi"}).content.decode()
    assert "gnp⟨U+202E⟩.exe ya⟨U+0007⟩" in listing and "\u202e" not in listing
    page = support.get(transcript("conv-bidi")).content.decode()
    assert "gnp⟨U+202E⟩.exe" in page and "\u202e" not in page


def test_a_huge_message_is_shortened_in_the_transcript_with_a_way_to_read_it_all(support: Client) -> None:
    huge = "x" * 1_000_000
    row = message("conv-huge", 0, huge)
    page = support.get(transcript("conv-huge"))
    assert page.status_code == 200 and len(page.content) < 100_000
    link = reverse("admin:conversations_conversationhistory_change", args=[row.pk])
    assert f'<a href="{link}">Show the whole message (1000000 characters)</a>' in page.content.decode()
    assert huge in support.get(link).content.decode()
    assert len(support.get(changelist("conversationhistory"), {"q": "conv-huge"}).content) < 100_000


def test_a_customer_and_words_search_together(support: Client) -> None:
    mine = message("conv-1", 0, "¿dónde está mi pedido?", customer_id="cust-42")
    message("conv-1", 1, "hola", customer_id="cust-42")
    message("conv-2", 0, "mi pedido no llegó", customer_id="cust-7")
    assert ids_on(support.get(changelist("conversationhistory"), {"q": "customer:cust-42 pedido"})) == [mine.pk]
    assert len(ids_on(support.get(changelist("conversationhistory"), {"q": "customer:cust-42"}))) == 2
    assert ids_on(support.get(changelist("conversationhistory"), {"q": "conversation:conv-2 pedido"})) != []
    assert ids_on(support.get(changelist("conversationhistory"), {"q": "customer:nobody pedido"})) == []


# --- login throttling ----------------------------------------------------------------------


def attempt(client: Client, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address
    )


def test_logins_are_throttled_per_user_and_address(support_user: User, settings: Any) -> None:  # noqa: F811
    client = Client()
    statuses = [attempt(client, "agent", "wrong").status_code for _ in range(settings.AXES_FAILURE_LIMIT)]
    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]  # the form again, then locked
    locked = attempt(client, "agent", "agent-password")
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    # Another address, or another user from the same address, is not locked out.
    assert attempt(Client(), "agent", "agent-password", address="10.0.0.2").status_code == 302
    User.objects.create_user("other", password="other-password", is_staff=True)
    assert attempt(Client(), "other", "other-password").status_code == 302


def test_a_successful_login_resets_the_count(support_user: User, settings: Any) -> None:  # noqa: F811
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(Client(), "agent", "wrong")
    assert attempt(Client(), "agent", "agent-password").status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(Client(), "agent", "wrong")
    assert attempt(Client(), "agent", "agent-password").status_code == 302


def test_next_links_read_from_a_cursor_and_reach_every_row_once(support: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(paginators, "COUNT_CAP", 120)
    expected = same_time_rows(260, content="pedido")  # one timestamp: only the id orders them
    seen: list[int] = []
    url = changelist("conversationhistory") + "?q=pedido"
    pages = 0
    while url:
        with CaptureQueriesContext(connection) as queries:
            response = support.get(url)
        seen += ids_on(response)
        pages += 1
        if pages > 1:  # read from the cursor, not from an offset
            page_sql = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"] and "conversation_history" in q["sql"]]
            assert page_sql and all("OFFSET" not in sql for sql in page_sql), page_sql
        url = response.context["cl"].next_url and changelist("conversationhistory") + response.context["cl"].next_url
    assert pages == 3 and len(seen) == 260 and sorted(seen) == sorted(expected)
    assert 'rel="next"' in support.get(changelist("conversationhistory"), {"q": "pedido"}).content.decode()


def test_a_malformed_cursor_is_a_400(support: Client) -> None:
    assert support.get(changelist("conversationhistory"), {"q": "x", "after": "yesterday"}).status_code == 400
