"""The run lock between archive runs, purges and erasures, on the real PostgreSQL and Redis."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, Max, Min

from conversations import conf, erasure, retention
from conversations.archiving import run_archive
from conversations.models import ArchivedConversation, ConversationHistory
from conversations.options import Options
from conversations.retention import purge
from conversations.storage import write
from tests.factories import hours_ago, lc, plain_value

pytestmark = pytest.mark.django_db(transaction=True)

LOCK = conf.DEFAULTS["LOCK_KEY"]


def old_rows(conversation_id: str, n: int, customer_id: str = "cust-7") -> None:
    """`n` messages archived long ago (seven months), with their conversation record."""
    when = hours_ago(24 * 220)
    ConversationHistory.objects.bulk_create(
        ConversationHistory(
            conversation_id=conversation_id, customer_id=customer_id, timestamp=when + timedelta(minutes=i),
            role="human", content=f"old {i}", position=i, message_key=f"old-{i}", source="plain",
            thread_id=conversation_id, archived_at=when,
        )
        for i in range(n)
    )
    ArchivedConversation.objects.create(
        conversation_id=conversation_id, customer_id=customer_id, thread_id=conversation_id,
        first_message_at=when, last_message_at=when + timedelta(minutes=n - 1), message_count=n,
        first_archived_at=when, last_archived_at=when,
    )


def seed_due(client, conversation_id: str, customer_id: str = "cust-7") -> None:
    messages = [lc("human", "¿Dónde está mi pedido?", id="m-new-1"), lc("ai", "Llega mañana.", id="m-new-2")]
    client.set(
        f"langgraph:checkpoint:{conversation_id}:",
        plain_value(messages, ts=hours_ago(30), conversation_id=conversation_id, customer_id=customer_id),
    )


def record_matches_rows(conversation_id: str) -> bool:
    record = ArchivedConversation.objects.get(conversation_id=conversation_id)
    facts = ConversationHistory.objects.filter(conversation_id=conversation_id).aggregate(
        n=Count("id"), first=Min("timestamp"), last=Max("timestamp")
    )
    return (record.message_count, record.first_message_at, record.last_message_at) == (facts["n"], facts["first"], facts["last"])


def test_a_purge_during_a_run_that_stores_the_conversation_leaves_its_record_right(plain_redis, monkeypatch):
    old_rows("conv-old", 3)
    seed_due(plain_redis, "conv-old")
    inside, go = threading.Event(), threading.Event()
    real_refresh = write._refresh_conversations

    def paused(*args, **kwargs):  # inside the run's transaction, its record computed from the old rows
        inside.set()
        assert go.wait(30)
        return real_refresh(*args, **kwargs)

    monkeypatch.setattr(write, "_refresh_conversations", paused)

    def in_thread(target, results, name):
        def work():
            try:
                results[name] = target()
            finally:
                connection.close()
        thread = threading.Thread(target=work)
        thread.start()
        return thread

    results: dict = {}
    run = in_thread(lambda: run_archive(Options.from_settings()), results, "run")
    assert inside.wait(30)
    purging = in_thread(lambda: purge(6), results, "purge")
    deadline = time.monotonic() + 30
    while ConversationHistory.objects.filter(message_key__startswith="old-").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert purging.is_alive(), "the purge recounted the records while the run still held the lock"
    go.set()
    run.join(30)
    purging.join(30)

    assert results["run"].archived == 1 and results["purge"].messages == 3
    assert ConversationHistory.objects.filter(conversation_id="conv-old").count() == 2
    assert record_matches_rows("conv-old")


def test_an_archive_run_waits_for_a_purge_to_release_the_lock(plain_redis):
    seed_due(plain_redis, "conv-1")
    plain_redis.set(LOCK, "purge:0123", px=700)
    began = time.monotonic()
    report = run_archive(Options.from_settings())
    assert report.archived == 1 and report.healthy
    assert time.monotonic() - began >= 0.5


def test_an_archive_run_still_leaves_a_running_archive_alone(plain_redis):
    seed_due(plain_redis, "conv-1")
    plain_redis.set(LOCK, "archive:0123", px=60_000)
    err = StringIO()
    call_command("archive_checkpoints", stdout=StringIO(), stderr=err)
    assert "Another archival run is in progress" in err.getvalue() and plain_redis.exists("langgraph:checkpoint:conv-1:")


def test_an_erasure_that_cannot_have_the_lock_says_so_and_erases_nothing(plain_redis, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "LOCK_WAIT_SECONDS": 1}
    old_rows("conv-old", 2)
    plain_redis.set(LOCK, "archive:0123", px=60_000)
    with pytest.raises(CommandError) as raised:
        call_command("erase_customer", "cust-7", stdout=StringIO())
    message = str(raised.value)
    assert message.startswith("Waited 1s for archive_checkpoints to release the run lock") and "\n" not in message
    assert "run erase_customer again later" in message
    assert ConversationHistory.objects.count() == 2


def test_an_erasure_holds_the_lock_as_an_erasure(plain_redis, monkeypatch):
    old_rows("conv-old", 2)
    seen = []
    real_delete = erasure.delete_in_batches

    def spy(*args, **kwargs):
        seen.append(plain_redis.get(LOCK))
        return real_delete(*args, **kwargs)

    monkeypatch.setattr(erasure, "delete_in_batches", spy)
    call_command("erase_customer", "cust-7", stdout=StringIO())
    assert seen and all(value is not None and value.startswith(b"erase:") for value in seen)
    assert not plain_redis.exists(LOCK)
    assert not ConversationHistory.objects.exists()


def test_a_purge_with_redis_down_deletes_nothing(plain_redis, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "REDIS_URL": "redis://127.0.0.1:1/0"}
    old_rows("conv-old", 2)
    with pytest.raises(CommandError, match=r"^Redis connection failed: redis://127.0.0.1:1/0"):
        call_command("purge_history", "--months", "6", stdout=StringIO())
    assert ConversationHistory.objects.count() == 2


def test_a_purge_that_loses_the_lock_stops_with_one_line(plain_redis, monkeypatch):
    """The lock can expire, or be deleted (a FLUSHDB by hand): the holder's next renewal stops
    it with a line a person can act on, not a traceback, and what it committed stays."""
    old_rows("conv-old", 2)
    real = retention.delete_in_batches

    def flushed_meanwhile(*args, **kwargs):
        plain_redis.delete(LOCK)  # what a FLUSHDB does to the lock while the purge holds it
        return real(*args, **kwargs)

    monkeypatch.setattr(retention, "delete_in_batches", flushed_meanwhile)
    with pytest.raises(CommandError) as failure:
        call_command("purge_history", "--months", "6", stdout=StringIO())
    assert str(failure.value).startswith(f"The run lock {LOCK!r} was lost while purge_history held it")
    assert "\n" not in str(failure.value)
    assert not ConversationHistory.objects.exists()  # the messages it deleted before stay deleted
