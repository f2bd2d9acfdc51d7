"""purge_history and erase_customer against the real PostgreSQL (and Redis for erasure)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from datetime import timezone as dt_timezone
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from freezegun import freeze_time

from conversations import export, retention
from conversations.exceptions import RetentionError
from conversations.models import ArchivedConversation, ArchiveRun, ConversationHistory, QuarantinedCheckpoint
from conversations.retention import months_before, purge
from tests.factories import hours_ago, lc, plain_value

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt_timezone.utc


def row(conversation_id: str, when: datetime, position: int = 0, customer_id: str | None = "c1", content: str = "hola") -> ConversationHistory:
    return ConversationHistory.objects.create(
        conversation_id=conversation_id, customer_id=customer_id, timestamp=when, role="human", content=content,
        position=position, message_key=f"k{position}", source="plain", thread_id=conversation_id, archived_at=when,
    )


def record(conversation_id: str, first: datetime, last: datetime, n: int) -> None:
    ArchivedConversation.objects.create(
        conversation_id=conversation_id, thread_id=conversation_id, first_message_at=first, last_message_at=last,
        message_count=n, first_archived_at=first, last_archived_at=last,
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Summer "now", winter cutoff: 2026-07-15 10:00 in Madrid (+02:00) minus 6 months is
# 2026-01-15 10:00 in Madrid (+01:00), that is 09:00 UTC, not 08:00 or 10:00.
SUMMER_NOW = utc(2026, 7, 15, 8, 0)


def test_cutoff_is_counted_on_madrids_calendar_across_the_dst_change():
    assert months_before(SUMMER_NOW, 6) == utc(2026, 1, 15, 9, 0)
    assert months_before(utc(2026, 8, 31, 10), 6).date().isoformat() == "2026-02-28"  # day clamped
    # 2026-09-29 02:30 Madrid minus 6 months is 2026-03-29 02:30, a time the DST change skipped.
    assert months_before(utc(2026, 9, 29, 0, 30), 6) == utc(2026, 3, 29, 1, 30)


def test_rows_on_each_side_of_the_cutoff():
    gone = row("old", utc(2026, 1, 15, 8, 59, 59))
    kept_at = row("edge", utc(2026, 1, 15, 9, 0, 0))
    kept_after = row("newer", utc(2026, 1, 15, 9, 30))

    report = purge(6, now=SUMMER_NOW)

    assert report.messages == 1 and report.conversations == 1
    assert set(ConversationHistory.objects.values_list("pk", flat=True)) == {kept_at.pk, kept_after.pk}
    assert not ConversationHistory.objects.filter(pk=gone.pk).exists()


def test_dry_run_counts_and_changes_nothing():
    for i in range(3):
        row("old", utc(2025, 12, 1 + i), position=i)
    row("new", utc(2026, 7, 1))
    out = StringIO()
    with freeze_time(SUMMER_NOW):
        call_command("purge_history", "--months", "6", "--dry-run", stdout=out)
    line = out.getvalue().strip()
    assert line.startswith("Would delete 3 messages of 1 conversations older than 2026-01-15T10:00:00+01:00")
    assert "from 2025-12-01T01:00:00+01:00 to 2025-12-03T01:00:00+01:00" in line
    assert ConversationHistory.objects.count() == 4


def test_deletes_in_small_batches_until_none_remain():
    for i in range(7):
        row("old", utc(2025, 1, 1), position=i)
    progress: list[str] = []
    report = purge(6, now=SUMMER_NOW, batch_size=2, progress=progress.append)
    assert report.messages == 7 and not ConversationHistory.objects.exists()
    assert progress[:4] == ["deleted 2 messages", "deleted 4 messages", "deleted 6 messages", "deleted 7 messages"]


@pytest.mark.parametrize("name", ["export.jsonl", "export.jsonl.gz"])
def test_export_writes_every_row_then_deletes_exactly_those(tmp_path, name, monkeypatch):
    old = [row("old", utc(2025, 11, 1, 10, i), position=i, content=f"mensaje {i} ñ 😀") for i in range(5)]
    row("new", utc(2026, 7, 1))
    real_export = retention.export_rows

    def archiver_writes_meanwhile(cutoff, path):
        count = real_export(cutoff, path)
        row("late", utc(2025, 10, 1), position=9)  # old by its own timestamp, but not exported
        return count

    monkeypatch.setattr(retention, "export_rows", archiver_writes_meanwhile)
    path = tmp_path / name
    report = purge(6, now=SUMMER_NOW, export=path)

    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        exported = [json.loads(line) for line in handle]
    assert [r["id"] for r in exported] == [r.pk for r in old]
    assert exported[3]["content"] == "mensaje 3 ñ 😀" and exported[0]["timestamp"].startswith("2025-11-01T10:00:00")
    assert report.messages == 5
    assert sorted(ConversationHistory.objects.values_list("conversation_id", flat=True)) == ["late", "new"]
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_failed_export_deletes_nothing_and_leaves_no_partial_file(tmp_path, monkeypatch):
    for i in range(3):
        row("old", utc(2025, 1, 1), position=i)

    def disk_full(cutoff):
        yield {"id": 1}
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_rows_older_than", disk_full)
    with pytest.raises(RetentionError, match="No space left on device; nothing was deleted"):
        purge(6, now=SUMMER_NOW, export=tmp_path / "x.jsonl")
    assert ConversationHistory.objects.count() == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--months", "0"], "--months must be at least 1; got 0."),
        (["--months", "-3"], "--months must be at least 1; got -3."),
        (["--months", "six"], "--months must be a whole number of months, such as 6; got 'six'."),
        (["--export", "/nonexistent/dir/x.jsonl"], "the folder /nonexistent/dir does not exist"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_error_and_deletes_nothing(args, message):
    row("old", utc(2020, 1, 1))
    with pytest.raises(CommandError) as error:
        call_command("purge_history", *args, stdout=StringIO())
    assert message in str(error.value) and "\n" not in str(error.value)
    assert ConversationHistory.objects.count() == 1


def test_an_existing_export_file_is_never_overwritten(tmp_path):
    row("old", utc(2020, 1, 1))
    (tmp_path / "x.jsonl").write_text("keep me")
    with pytest.raises(CommandError, match="exists already"):
        call_command("purge_history", "--export", str(tmp_path / "x.jsonl"), stdout=StringIO())
    assert (tmp_path / "x.jsonl").read_text() == "keep me" and ConversationHistory.objects.count() == 1


def test_the_same_retention_applies_to_everything_else():
    row("gone", utc(2025, 1, 1))
    row("partly", utc(2025, 1, 1), position=0)
    row("partly", utc(2026, 7, 1), position=1)
    record("gone", utc(2025, 1, 1), utc(2025, 1, 1), 1)
    record("partly", utc(2025, 1, 1), utc(2026, 7, 1), 2)
    QuarantinedCheckpoint.objects.create(key="old", source="plain", raw_value=b"x", value_sha1="a", error="e", quarantined_at=utc(2025, 1, 1))
    QuarantinedCheckpoint.objects.create(key="new", source="plain", raw_value=b"x", value_sha1="b", error="e", quarantined_at=utc(2026, 7, 1))
    ArchiveRun.objects.create(started_at=utc(2025, 1, 1), status="healthy")
    ArchiveRun.objects.create(started_at=utc(2026, 7, 1), status="healthy")

    report = purge(6, now=SUMMER_NOW)

    assert (report.messages, report.conversation_records, report.quarantined, report.runs) == (2, 1, 1, 1)
    partly = ArchivedConversation.objects.get()
    assert (partly.conversation_id, partly.message_count, partly.first_message_at) == ("partly", 1, utc(2026, 7, 1))
    assert list(QuarantinedCheckpoint.objects.values_list("key", flat=True)) == ["new"]
    assert ArchiveRun.objects.count() == 1


def test_partly_purged_conversations_are_recounted_a_few_at_a_time(monkeypatch):
    """Each record recounted in a batch gets its own figures; one whose messages are all gone
    (its record said one was recent) is dropped and counted; one with nothing old is left as is."""
    monkeypatch.setattr(retention, "RECOUNT_BATCH", 2)
    for n in range(5):
        row(f"partly-{n}", utc(2025, 1, 1), position=0)
        for position in range(1, n + 2):
            row(f"partly-{n}", utc(2026, 7, position), position=position)
        record(f"partly-{n}", utc(2025, 1, 1), utc(2026, 7, n + 1), n + 2)
    row("stale", utc(2025, 1, 1))
    record("stale", utc(2025, 1, 1), utc(2026, 7, 1), 2)
    row("new", utc(2026, 7, 1))
    record("new", utc(2026, 7, 1), utc(2026, 7, 1), 9)

    report = purge(6, now=SUMMER_NOW)

    assert (report.messages, report.conversation_records) == (6, 1)
    got = {r.conversation_id: (r.message_count, r.first_message_at, r.last_message_at) for r in ArchivedConversation.objects.all()}
    assert got == {
        **{f"partly-{n}": (n + 1, utc(2026, 7, 1), utc(2026, 7, n + 1)) for n in range(5)},
        "new": (9, utc(2026, 7, 1), utc(2026, 7, 1)),
    }


def test_default_months_come_from_the_setting(settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "RETENTION_MONTHS": 1}
    row("old", timezone.now() - timezone.timedelta(days=40))
    out = StringIO()
    call_command("purge_history", stdout=out)
    assert out.getvalue().startswith("Deleted 1 messages")


# --- erasure ----------------------------------------------------------------------------


def test_erasure_removes_the_customers_conversations_everywhere(plain_redis):
    row("conv-1", utc(2026, 1, 1), position=0, customer_id=None)  # before identification
    row("conv-1", utc(2026, 1, 1, 0, 1), position=1, customer_id="cust-42")
    row("conv-2", utc(2026, 1, 1), customer_id="cust-7")
    ArchivedConversation.objects.create(conversation_id="conv-1", customer_id="cust-42", thread_id="conv-1", first_archived_at=utc(2026, 1, 1), last_archived_at=utc(2026, 1, 1))
    QuarantinedCheckpoint.objects.create(key="q", source="plain", raw_value=b'{"customer_id": "cust-42"}', value_sha1="a", error="e", quarantined_at=utc(2026, 1, 1))
    QuarantinedCheckpoint.objects.create(key="q2", source="plain", raw_value=b'{"customer_id": "cust-420"}', value_sha1="b", error="e", quarantined_at=utc(2026, 1, 1))
    plain_redis.set("langgraph:checkpoint:live-1:1", plain_value([lc("human", "hola", "h1")], ts=hours_ago(1), customer_id="cust-42"))
    plain_redis.set("langgraph:checkpoint:live-2:1", plain_value([lc("human", "hola", "h1")], ts=hours_ago(1), customer_id="cust-7"))

    out = StringIO()
    call_command("erase_customer", "cust-42", "--dry-run", stdout=out)
    assert out.getvalue().startswith("Would erase customer 'cust-42': 2 archived messages in 1 conversations, 1 live conversations in Redis, 1 quarantined")
    assert ConversationHistory.objects.count() == 3 and plain_redis.exists("langgraph:checkpoint:live-1:1")

    out = StringIO()
    call_command("erase_customer", "cust-42", stdout=out)
    assert out.getvalue().startswith("Erased customer 'cust-42': 2 archived messages in 1 conversations, 1 live conversations in Redis, 1 quarantined")
    assert list(ConversationHistory.objects.values_list("conversation_id", flat=True)) == ["conv-2"]
    assert not ArchivedConversation.objects.exists()
    assert list(QuarantinedCheckpoint.objects.values_list("key", flat=True)) == ["q2"]
    assert not plain_redis.exists("langgraph:checkpoint:live-1:1") and plain_redis.exists("langgraph:checkpoint:live-2:1")


@pytest.mark.parametrize("customer_id", ["", "   "])
def test_erasure_refuses_an_empty_id(plain_redis, customer_id):
    row("conv-1", utc(2026, 1, 1), customer_id=None)
    with pytest.raises(CommandError, match="The customer id is empty"):
        call_command("erase_customer", customer_id, stdout=StringIO())
    assert ConversationHistory.objects.count() == 1


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_an_id_that_matches_nothing_is_an_error_that_names_close_ids(plain_redis, dry_run):
    for conversation_id, customer_id in (("conv-1", "cust-42"), ("conv-2", "CUST-421"), ("conv-3", "other-9")):
        row(conversation_id, utc(2026, 1, 1), customer_id=customer_id)
        ArchivedConversation.objects.create(
            conversation_id=conversation_id, customer_id=customer_id, thread_id=conversation_id,
            first_archived_at=utc(2026, 1, 1), last_archived_at=utc(2026, 1, 1),
        )
    with pytest.raises(CommandError) as raised:
        call_command("erase_customer", "cust-24", *dry_run, stdout=StringIO())
    assert str(raised.value) == (
        "Nothing matched customer id 'cust-24': no archived message, live conversation or quarantined value names it. "
        "Close ids: 'cust-42', 'CUST-421'."
    )
    with pytest.raises(CommandError, match=r"names it\. Check the id as stored"):
        call_command("erase_customer", "zzz", *dry_run, stdout=StringIO())
    assert ConversationHistory.objects.count() == 3 and ArchivedConversation.objects.count() == 3
