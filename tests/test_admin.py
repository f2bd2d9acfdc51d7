"""The support view: who may see the archive in the admin, that nobody can change it, that
searches find exactly the right rows through indexes, and that transcripts and quarantined
values are shown in order and as escaped text. Real PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations import paginators
from conversations.admin.display import RAW_VALUE_SHOWN_BYTES
from conversations.admin.search import filter_by_words
from conversations.admin.transcript import TRANSCRIPT_URL_NAME, transcript_url
from conversations.models import ArchivedConversation, ArchiveRun, ConversationHistory, QuarantinedCheckpoint

pytestmark = pytest.mark.django_db

MODELS = ("conversationhistory", "archivedconversation", "archiverun", "quarantinedcheckpoint")
BASE = datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)  # 12:00 CEST in Madrid


def message(
    conversation_id: str,
    position: int,
    content: str,
    *,
    customer_id: str | None = "cust-1",
    role: str = "human",
    at: datetime | None = None,
    **fields: Any,
) -> ConversationHistory:
    return ConversationHistory.objects.create(
        conversation_id=conversation_id,
        customer_id=customer_id,
        timestamp=at or BASE + timedelta(minutes=position),
        role=role,
        content=content,
        position=position,
        message_key=f"{conversation_id}:{position}",
        source=fields.pop("source", "plain"),
        thread_id=conversation_id,
        archived_at=BASE + timedelta(days=1),
        **fields,
    )


def conversation(
    conversation_id: str, customer_id: str | None = "cust-1", summary: str | None = None
) -> ArchivedConversation:
    return ArchivedConversation.objects.create(
        conversation_id=conversation_id,
        customer_id=customer_id,
        thread_id=conversation_id,
        summary=summary,
        first_message_at=BASE,
        last_message_at=BASE + timedelta(hours=1),
        message_count=ConversationHistory.objects.filter(conversation_id=conversation_id).count(),
        first_archived_at=BASE + timedelta(days=1),
        last_archived_at=BASE + timedelta(days=1),
    )


def quarantined(raw: bytes, key: str = "langgraph:checkpoint:broken:") -> QuarantinedCheckpoint:
    return QuarantinedCheckpoint.objects.create(
        key=key,
        source="plain",
        redis_type="string",
        raw_value=raw,
        value_sha1="0" * 40,
        error="not JSON <b>here</b>",
        quarantined_at=BASE,
    )


def changelist(model: str) -> str:
    return reverse(f"admin:conversations_{model}_changelist")


def transcript(conversation_id: str) -> str:
    return reverse(f"admin:{TRANSCRIPT_URL_NAME}", args=[quote(conversation_id)])


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def support_user() -> User:
    user = User.objects.create_user("agent", password="agent-password", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    return user


@pytest.fixture
def staff_user() -> User:
    return User.objects.create_user("someone", password="x", is_staff=True)


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("root", password="x")


@pytest.fixture
def support(support_user: User) -> Client:
    return client_for(support_user)


@pytest.fixture
def archive() -> dict[str, Any]:
    """Two customers, three conversations, one run, one quarantined value."""
    rows = [
        message("conv-a1", 0, "Hello, my parcel never arrived", customer_id="cust-1"),
        message("conv-a1", 1, "Sorry to hear that! Refund issued for order 42.", customer_id="cust-1", role="ai"),
        message("conv-a2", 0, "Can I change my delivery address?", customer_id="cust-1"),
        message("conv-b1", 0, "Where is my refund?", customer_id="cust-2"),
        message("conv-b1", 1, "Your refund was sent yesterday.", customer_id="cust-2", role="ai"),
    ]
    conversation("conv-a1", "cust-1", "Parcel lost; refunded.")
    run = ArchiveRun.objects.create(
        started_at=BASE, finished_at=BASE + timedelta(seconds=3), status="healthy", messages_archived=5
    )
    bad = quarantined(b"{not json")
    return {"rows": rows, "run": run, "quarantined": bad}


def result_ids(response: Any) -> list[int]:
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


# --- who may see what -------------------------------------------------------------------


def test_the_support_group_has_exactly_the_view_permissions() -> None:
    group = Group.objects.get(name="support")
    codenames = sorted(group.permissions.values_list("codename", flat=True))
    assert codenames == sorted(f"view_{model}" for model in MODELS)


def test_anonymous_users_are_sent_to_the_login_page(client: Client, archive: dict[str, Any]) -> None:
    urls = [changelist(model) for model in MODELS] + [transcript("conv-a1")]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_staff_without_the_group_see_nothing(staff_user: User, archive: dict[str, Any]) -> None:
    client = client_for(staff_user)
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert changelist("conversationhistory") not in index.content.decode()
    row = archive["rows"][0]
    urls = [changelist(model) for model in MODELS] + [
        transcript("conv-a1"),
        reverse("admin:conversations_conversationhistory_change", args=[row.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 403, url


def test_the_support_group_can_view_everything(support: Client, archive: dict[str, Any]) -> None:
    index = support.get(reverse("admin:index")).content.decode()
    for model in MODELS:
        assert changelist(model) in index
        assert support.get(changelist(model)).status_code == 200, model
    details = [
        reverse("admin:conversations_conversationhistory_change", args=[archive["rows"][0].pk]),
        reverse("admin:conversations_archivedconversation_change", args=[ArchivedConversation.objects.get().pk]),
        reverse("admin:conversations_archiverun_change", args=[archive["run"].pk]),
        reverse("admin:conversations_quarantinedcheckpoint_change", args=[archive["quarantined"].pk]),
    ]
    for url in details:
        response = support.get(url)
        assert response.status_code == 200, url
        assert 'name="_save"' not in response.content.decode(), url


@pytest.mark.parametrize("who", ["support_user", "superuser"])
def test_nobody_can_add_change_or_delete(request: pytest.FixtureRequest, who: str, archive: dict[str, Any]) -> None:
    user = request.getfixturevalue(who)
    client = client_for(user)
    row = archive["rows"][0]
    targets = {
        "conversationhistory": row.pk,
        "archivedconversation": ArchivedConversation.objects.get().pk,
        "archiverun": archive["run"].pk,
        "quarantinedcheckpoint": archive["quarantined"].pk,
    }
    for model, pk in targets.items():
        assert client.get(reverse(f"admin:conversations_{model}_add")).status_code == 403, model
        assert client.post(reverse(f"admin:conversations_{model}_add"), {"content": "new"}).status_code == 403, model
        changed = client.post(reverse(f"admin:conversations_{model}_change", args=[pk]), {"content": "changed"})
        assert changed.status_code == 403, model
        deleted = client.post(reverse(f"admin:conversations_{model}_delete", args=[pk]), {"post": "yes"})
        assert deleted.status_code == 403, model
    assert ConversationHistory.objects.count() == 5
    row.refresh_from_db()
    assert row.content == "Hello, my parcel never arrived"
    assert ArchiveRun.objects.filter(pk=archive["run"].pk).exists()
    assert QuarantinedCheckpoint.objects.filter(pk=archive["quarantined"].pk).exists()


def test_the_permission_methods_refuse_even_superusers(superuser: User, rf: Any) -> None:
    from django.contrib.admin import site

    request = rf.get("/")
    request.user = superuser
    for model in (ConversationHistory, ArchivedConversation, ArchiveRun, QuarantinedCheckpoint):
        model_admin = site._registry[model]
        assert model_admin.has_view_permission(request) is True
        assert model_admin.has_add_permission(request) is False
        assert model_admin.has_change_permission(request) is False
        assert model_admin.has_delete_permission(request) is False
        assert not model_admin.get_actions(request)


# --- search -------------------------------------------------------------------------------


def test_search_by_customer_gives_that_customers_rows_only(support: Client, archive: dict[str, Any]) -> None:
    rows = archive["rows"]
    with CaptureQueriesContext(connection) as queries:
        found = result_ids(support.get(changelist("conversationhistory"), {"q": "cust-1"}))
    # (captured_queries is read from the connection's log, which the next request resets)
    sql = "\n".join(q["sql"] for q in queries.captured_queries if "conversation_history" in q["sql"])
    assert sorted(found) == sorted(r.pk for r in rows[:3])
    # A plain `=` that the (customer_id, timestamp) index serves, not UPPER() = UPPER().
    assert "\"conversation_history\".\"customer_id\" = 'cust-1'" in sql
    assert "UPPER(" not in sql
    assert sorted(result_ids(support.get(changelist("conversationhistory"), {"q": " cust-2 "}))) == [
        rows[3].pk,
        rows[4].pk,
    ]


def test_search_by_customer_is_not_a_prefix_or_case_match(support: Client, archive: dict[str, Any]) -> None:
    assert result_ids(support.get(changelist("conversationhistory"), {"q": "CUST-1"})) == []
    assert result_ids(support.get(changelist("conversationhistory"), {"q": "cust"})) == []


def test_search_by_conversation_id(support: Client, archive: dict[str, Any]) -> None:
    rows = archive["rows"]
    found = result_ids(support.get(changelist("conversationhistory"), {"q": "conv-a1"}))
    assert sorted(found) == [rows[0].pk, rows[1].pk]


def test_word_search_finds_messages_containing_the_words(support: Client, archive: dict[str, Any]) -> None:
    rows = archive["rows"]
    found = result_ids(support.get(changelist("conversationhistory"), {"q": "refund"}))
    assert sorted(found) == [rows[1].pk, rows[3].pk, rows[4].pk]  # any case
    found = result_ids(support.get(changelist("conversationhistory"), {"q": "Refund issued"}))
    assert found == [rows[1].pk]
    assert result_ids(support.get(changelist("conversationhistory"), {"q": "teleport"})) == []


def test_word_search_uses_the_gin_index() -> None:
    for i in range(200):
        message(f"conv-{i}", 0, f"filler message number {i}", customer_id=f"cust-{i}")
    message("conv-x", 0, "the word zebra is rare", customer_id="cust-x")
    queryset = filter_by_words(ConversationHistory.objects.all(), "zebra")
    assert [row.conversation_id for row in queryset] == ["conv-x"]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.explain()
    assert "conv_history_content_fts" in plan


def test_the_search_index_exists_as_the_admin_writes_it() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'conv_history_content_fts'")
        (definition,) = cursor.fetchone()
    assert "USING gin (to_tsvector('simple'::regconfig, content))" in definition


def test_filters_by_role_and_date(support: Client, archive: dict[str, Any]) -> None:
    rows = archive["rows"]
    old = message("conv-old", 0, "ancient", customer_id="cust-3", at=datetime(2020, 1, 1, tzinfo=timezone.utc))
    ai = result_ids(support.get(changelist("conversationhistory"), {"role": "ai"}))
    assert sorted(ai) == [rows[1].pk, rows[4].pk]
    recent = result_ids(
        # As DateFieldListFilter's own links spell a range on a DateTimeField: with the offset.
        support.get(
            changelist("conversationhistory"),
            {"timestamp__gte": "2026-01-01 00:00:00+01:00", "timestamp__lt": "2027-01-01 00:00:00+01:00"},
        )
    )
    assert old.pk not in recent and sorted(recent) == sorted(r.pk for r in rows)
    both = result_ids(support.get(changelist("conversationhistory"), {"q": "cust-2", "role": "ai"}))
    assert both == [rows[4].pk]


def test_times_are_shown_in_madrid(support: Client, archive: dict[str, Any]) -> None:
    page = support.get(changelist("conversationhistory"), {"q": "cust-2"}).content.decode()
    assert "2026-07-01 12:00:00 CEST" in page  # 10:00 UTC
    winter = message("conv-w", 0, "winter", customer_id="cust-w", at=datetime(2026, 1, 15, 9, 30, tzinfo=timezone.utc))
    page = support.get(changelist("conversationhistory"), {"q": winter.customer_id}).content.decode()
    assert "2026-01-15 10:30:00 CET" in page


# --- counting ------------------------------------------------------------------------------


def test_the_changelist_never_counts_the_whole_table(support: Client, archive: dict[str, Any]) -> None:
    counts = []
    for params in ({}, {"role": "human"}, {"q": "refund"}):
        with CaptureQueriesContext(connection) as queries:
            assert support.get(changelist("conversationhistory"), params).status_code == 200
        counts += [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the paginator should count the (small) filtered set"
    for sql in counts:
        assert "LIMIT" in sql.upper(), sql


def test_the_paginator_counts_exactly_where_cheap_and_labels_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paginators, "COUNT_CAP", 5)
    for i in range(12):
        message("conv-p", i, f"text {i}", role="ai" if i < 3 else "human")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversation_history")
    everything = paginators.ArchivePaginator(ConversationHistory.objects.order_by("pk"), 4)
    assert (everything.count, everything.estimated, everything.label) == (12, True, "about 12")
    few = paginators.ArchivePaginator(ConversationHistory.objects.filter(role="ai"), 4)
    assert (few.count, few.open_ended, few.label) == (3, False, "3")
    many = paginators.ArchivePaginator(ConversationHistory.objects.filter(role="human").order_by("pk"), 4)
    assert (many.capped, many.label) == (True, "more than 5")
    exact = paginators.ArchivePaginator(ConversationHistory.objects.filter(role="human"), 4, exact=True)
    assert (exact.count, exact.open_ended, exact.num_pages) == (9, False, 3)
    assert exact.page(7).number == 3  # past the end: the last page

    # Open-ended: each page says whether one more exists, up to the last row, each row once.
    seen, number = [], 1
    while True:
        page = many.page(number)
        seen += [row.pk for row in page.object_list]
        if not page.has_next():
            break
        number += 1
    assert number == 3 and sorted(seen) == sorted(ConversationHistory.objects.filter(role="human").values_list("pk", flat=True))
    past = many.page(40)
    assert list(past.object_list) == [] and many.past_end


# --- transcripts ----------------------------------------------------------------------------


def test_the_transcript_shows_every_message_in_order_escaped(support: Client) -> None:
    # Written out of order: the page must follow `position`.
    call = {"name": "lookup_order", "args": {"q": "<b>42</b>"}, "id": "call-1"}
    message("conv-t", 2, "", role="ai", tool_calls=[call])
    message("conv-t", 0, "Hi <script>alert('x')</script>\nsecond line", customer_id="cust-t")
    result = json.dumps({"status": "shipped", "eta": "<soon>"})
    message("conv-t", 3, result, role="tool", tool_call_id="call-1", name="lookup_order")
    message("conv-t", 1, "Let me check & see.", role="ai")
    conversation("conv-t", "cust-t", summary="Customer asked <about> an order.\nResolved.")
    response = support.get(transcript("conv-t"))
    assert response.status_code == 200
    page = response.content.decode()
    assert [entry.position for entry in response.context["entries"]] == [0, 1, 2, 3]
    assert page.index('id="m-0"') < page.index('id="m-1"') < page.index('id="m-2"') < page.index('id="m-3"')
    assert "Hi &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;\nsecond line" in page
    assert "<script>alert" not in page
    assert "Let me check &amp; see." in page
    # Tool calls and results as indented JSON, escaped.
    assert '&quot;name&quot;: &quot;lookup_order&quot;' in page
    assert "&lt;b&gt;42&lt;/b&gt;" in page and "<b>42</b>" not in page
    assert '{\n  &quot;status&quot;: &quot;shipped&quot;,\n  &quot;eta&quot;: &quot;&lt;soon&gt;&quot;\n}' in page
    assert "result of tool call call-1" in page
    # The summary and the way back to the customer's other messages.
    assert "Customer asked &lt;about&gt; an order.\nResolved." in page
    assert f'{changelist("conversationhistory")}?q=cust-t' in page
    assert "2026-07-01 12:00:00 CEST" in page


def test_the_transcript_is_linked_from_results_rows_and_conversations(support: Client, archive: dict[str, Any]) -> None:
    url = transcript("conv-a1")
    results = support.get(changelist("conversationhistory"), {"q": "cust-1"}).content.decode()
    assert f'href="{url}?page=1#m-1"' in results
    row = archive["rows"][1]
    detail = support.get(reverse("admin:conversations_conversationhistory_change", args=[row.pk])).content.decode()
    assert f'href="{url}?page=1#m-1"' in detail
    conversations = support.get(changelist("archivedconversation"), {"q": "cust-1"}).content.decode()
    assert f'href="{url}"' in conversations


def test_long_transcripts_are_paginated(support: Client) -> None:
    ConversationHistory.objects.bulk_create(
        [
            ConversationHistory(
                conversation_id="conv-long",
                customer_id="cust-long",
                timestamp=BASE + timedelta(seconds=i),
                role="human" if i % 2 == 0 else "ai",
                content=f"message number {i}",
                position=i,
                message_key=str(i),
                source="plain",
                thread_id="conv-long",
                archived_at=BASE,
            )
            for i in range(450)
        ]
    )
    first = support.get(transcript("conv-long"))
    assert [e.position for e in first.context["entries"]] == list(range(200))
    assert "page 1 of 3" in first.content.decode()
    last = support.get(transcript("conv-long"), {"page": 3})
    assert [e.position for e in last.context["entries"]] == list(range(400, 450))
    assert "message number 449" in last.content.decode() and "message number 399" not in last.content.decode()
    # A row links to the page its message is on.
    assert transcript_url("conv-long", 401).endswith("?page=3#m-401")


def test_transcript_of_an_odd_conversation_id(support: Client) -> None:
    odd = "thread/with?odd#chars_and spaces"
    message(odd, 0, "still found", customer_id="cust-odd")
    results = support.get(changelist("conversationhistory"), {"q": "cust-odd"}).content.decode()
    assert transcript(odd) in results
    response = support.get(transcript(odd))
    assert response.status_code == 200
    assert "still found" in response.content.decode()


def test_the_transcript_flags_what_the_bot_removed_and_what_only_a_subgraph_had(support: Client) -> None:
    message("conv-h", 0, "hola", source="redis")
    message("conv-h", 1, "old answer <b>", role="ai", source="redis", removed_at=BASE + timedelta(hours=2))
    message("conv-h", 2, "checking", role="ai", source="redis", checkpoint_ns="support:1f0-task")
    message("conv-p", 0, "plain", checkpoint_ns="1698765432")  # the plain layout's key suffix is no subgraph

    page = support.get(transcript("conv-h")).content.decode()

    items = page.split('<li class="message ')[1:]
    assert "removed-flag" not in items[0] and "subgraph-flag" not in items[0]
    assert "removed from the bot's state 2026-07-01 14:00:00 CEST" in items[1] and "old answer &lt;b&gt;" in items[1]
    assert items[1].startswith("role-ai removed")
    assert "in subgraph support:1f0-task" in items[2] and "removed-flag" not in items[2]
    assert "subgraph-flag" not in support.get(transcript("conv-p")).content.decode()


def test_unknown_conversation_is_not_found(support: Client) -> None:
    assert support.get(transcript("no-such-conversation")).status_code == 404


# --- runs and quarantine --------------------------------------------------------------------


def test_archive_runs_are_listed_with_their_errors(support: Client) -> None:
    run = ArchiveRun.objects.create(
        started_at=BASE, status="unhealthy", errors=2, messages_archived=7, error_messages="Redis <down>\nretry failed"
    )
    listing = support.get(changelist("archiverun")).content.decode()
    assert "unhealthy" in listing and "2026-07-01 12:00:00 CEST" in listing
    detail = support.get(reverse("admin:conversations_archiverun_change", args=[run.pk])).content.decode()
    assert "<pre>Redis &lt;down&gt;\nretry failed</pre>" in detail


def test_quarantined_text_value_is_shown_escaped(support: Client) -> None:
    bad = quarantined('{"html": "<img src=x onerror=alert(1)>"}\n<b>ñ</b>'.encode())
    page = support.get(reverse("admin:conversations_quarantinedcheckpoint_change", args=[bad.pk])).content.decode()
    assert "{&quot;html&quot;: &quot;&lt;img src=x onerror=alert(1)&gt;&quot;}\n&lt;b&gt;ñ&lt;/b&gt;" in page
    assert "<img src=x" not in page and "<b>ñ</b>" not in page
    assert "UTF-8 text" in page
    assert "not JSON &lt;b&gt;here&lt;/b&gt;" in page


def test_quarantined_binary_value_is_shown_as_hex(support: Client) -> None:
    bad = quarantined(b"\x00\x10<script>\xff\xfe", key="langgraph:checkpoint:dump:")
    page = support.get(reverse("admin:conversations_quarantinedcheckpoint_change", args=[bad.pk])).content.decode()
    assert "binary, 12 bytes, as hex" in page
    assert "00 10 3c 73 63 72 69 70 74 3e ff fe" in page
    assert "|..&lt;script&gt;..|" in page
    assert "<script>" not in page


def test_large_quarantined_values_are_cut(support: Client) -> None:
    bad = quarantined(b"x" * (RAW_VALUE_SHOWN_BYTES + 10))
    page = support.get(reverse("admin:conversations_quarantinedcheckpoint_change", args=[bad.pk])).content.decode()
    assert f"first {RAW_VALUE_SHOWN_BYTES:,} shown" in page
    assert "x" * RAW_VALUE_SHOWN_BYTES in page
    assert "x" * (RAW_VALUE_SHOWN_BYTES + 1) not in page


def test_the_quarantine_list_does_not_load_raw_values(support: Client) -> None:
    quarantined(b"payload-that-should-not-be-read")
    with CaptureQueriesContext(connection) as queries:
        assert support.get(changelist("quarantinedcheckpoint")).status_code == 200
    selects = [q["sql"] for q in queries.captured_queries if 'FROM "quarantined_checkpoint"' in q["sql"]]
    assert selects and all('"raw_value"' not in sql for sql in selects)


def test_each_model_needs_its_own_view_permission(staff_user: User) -> None:
    staff_user.user_permissions.add(Permission.objects.get(codename="view_archiverun"))
    client = client_for(staff_user)
    assert client.get(changelist("archiverun")).status_code == 200
    assert client.get(changelist("conversationhistory")).status_code == 403
