"""The plain-string layout of the operations guide, end to end against real Redis and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations.archiving import run_archive
from conversations.checkpoints import Candidate
from conversations.models import ArchivedConversation, ArchiveRun, ConversationHistory, QuarantinedCheckpoint
from conversations.options import Options, is_due
from tests.factories import hours_ago, lc, plain_value, simple

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "langgraph:checkpoint:wa-msg-abc123:1698765432"


def archive(**kwargs):
    return run_archive(Options.from_settings(**kwargs))


def test_archives_an_expired_conversation_and_removes_its_key(plain_redis):
    plain_redis.set(
        KEY,
        plain_value(
            [lc("human", "¿Dónde está mi pedido? 🙏", "h1"), lc("ai", "Está en camino.\n\"Llega\" mañana 明天", "a1")],
            ts=hours_ago(23.5),
            conversation_id="wa-msg-abc123",
            customer_id="cust-42",
            summary="Pedido en camino",
        ),
        ex=3600,
    )

    report = archive()

    assert (report.archived, report.messages, report.errors) == (1, 2, 0)
    rows = list(ConversationHistory.objects.filter(conversation_id="wa-msg-abc123").order_by("position"))
    assert [(r.position, r.role, r.content, r.message_id, r.customer_id) for r in rows] == [
        (0, "human", "¿Dónde está mi pedido? 🙏", "h1", "cust-42"),
        (1, "ai", "Está en camino.\n\"Llega\" mañana 明天", "a1", "cust-42"),
    ]
    assert rows[0].thread_id == "wa-msg-abc123" and rows[0].checkpoint_ns == "1698765432" and rows[0].source == "plain"
    assert not plain_redis.exists(KEY)
    conversation = ArchivedConversation.objects.get(conversation_id="wa-msg-abc123")
    assert (conversation.summary, conversation.customer_id, conversation.message_count) == ("Pedido en camino", "cust-42", 2)


def test_the_guides_sql_works_as_written(plain_redis):
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(30), conversation_id="wa-msg-abc123"))
    archive()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM conversation_history WHERE conversation_id='wa-msg-abc123'")
        assert len(cursor.fetchall()) == 1
        cursor.execute("SELECT COUNT(*) FROM conversation_history")
        assert cursor.fetchone()[0] == 1
        cursor.execute("DELETE FROM conversation_history WHERE timestamp < NOW() - INTERVAL '6 months'")
        assert cursor.rowcount == 0


@pytest.mark.parametrize(
    "age_hours, ttl_seconds, archived",
    [
        (22.99, None, False),  # just younger than the cutoff, no expiry
        (23.01, None, True),  # just past the cutoff
        # The derived buffer, with no run recorded: the 60-minute schedule + a 10-minute margin.
        (1, 70 * 60 + 2, False),  # young, two seconds more than the buffer left
        (1, 70 * 60 - 2, True),  # young, but its keys would not outlive the next run
    ],
)
def test_cutoff_and_ttl_buffer_boundaries(plain_redis, age_hours, ttl_seconds, archived):
    """Real TTLs, set by Redis and read back by the run."""
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(age_hours)), ex=ttl_seconds)

    report = archive()

    assert report.archived == int(archived)
    assert ConversationHistory.objects.exists() is archived
    assert bool(plain_redis.exists(KEY)) is not archived


def test_a_conversation_exactly_as_old_as_the_cutoff_is_due(plain_redis):
    now = timezone.now()  # the clock the run is given, and the one the checkpoint is dated by
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=now - timedelta(hours=23)))
    younger = "langgraph:checkpoint:younger:1"
    plain_redis.set(younger, plain_value([lc("human", "hola", "h1")], ts=now - timedelta(hours=23) + timedelta(microseconds=1)))

    report = archive(now=now, cutoff_hours=23)

    assert report.archived == 1
    assert not plain_redis.exists(KEY) and plain_redis.exists(younger)


@pytest.mark.parametrize("ttl_seconds, due", [(3600, False), (3599.999, True), (None, False)])
def test_keys_with_exactly_the_ttl_buffer_left_are_not_yet_due(ttl_seconds, due):
    """Remaining TTL is read in milliseconds, so the boundary is checked on the rule itself."""
    now = timezone.now()
    candidate = Candidate(key=KEY, thread_id="t", checkpoint_ns="", checkpoint_key=KEY,
                          checkpoint_time=now - timedelta(hours=1), ttl_seconds=ttl_seconds)
    assert is_due(candidate, Options.from_settings(now=now, ttl_buffer_minutes=60)) is due


@pytest.mark.parametrize("longest_run_minutes, due", [(19, False), (21, True)])
def test_the_derived_buffer_allows_for_the_longest_recent_run(plain_redis, longest_run_minutes, due):
    """60-minute schedule + the longest recent run + 10 minutes: 90 minutes with a 20-minute run."""
    started = timezone.now() - timedelta(hours=3)
    ArchiveRun.objects.create(started_at=started, finished_at=started + timedelta(minutes=longest_run_minutes))
    ArchiveRun.objects.create(started_at=started + timedelta(hours=1), finished_at=started + timedelta(hours=1, minutes=1))
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(1)), ex=90 * 60)

    assert archive().archived == int(due)
    assert bool(plain_redis.exists(KEY)) is not due


def test_simple_dict_messages_map_roles_and_keep_their_own_timestamps(plain_redis):
    plain_redis.set(
        KEY,
        plain_value(
            [
                simple("user", "Hola", "2026-11-27T10:00:00+01:00"),
                simple("assistant", "¿En qué puedo ayudarte?", "2026-11-27T10:00:05+01:00"),
                simple("system", "nota"),
            ],
            ts=hours_ago(25),
        ),
    )
    archive()
    rows = list(ConversationHistory.objects.order_by("position"))
    assert [r.role for r in rows] == ["human", "ai", "system"]
    assert rows[0].timestamp.isoformat() == "2026-11-27T09:00:00+00:00"
    assert rows[1].timestamp.isoformat() == "2026-11-27T09:00:05+00:00"
    # No time of its own: the checkpoint's, which is later, so time does not go backwards.
    assert rows[2].timestamp >= rows[1].timestamp


def test_missing_customer_is_archived_with_null(plain_redis):
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24)))
    archive()
    assert ConversationHistory.objects.get().customer_id is None


def test_content_blocks_keep_every_text_and_the_structure(plain_redis):
    blocks = [{"type": "text", "text": "Primera parte. "}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "Segunda 😀"}]
    plain_redis.set(KEY, plain_value([lc("ai", blocks, "a1")], ts=hours_ago(24)))
    archive()
    row = ConversationHistory.objects.get()
    assert row.content == "Primera parte. Segunda 😀"
    assert row.content_blocks == blocks


def test_tool_calls_and_tool_results_are_kept(plain_redis):
    call = {"name": "lookup_order", "args": {"order_id": "ORD-3"}, "id": "call_3", "type": "tool_call"}
    plain_redis.set(
        KEY,
        plain_value(
            [
                lc("ai", "", "a1", tool_calls=[call], response_metadata={"finish_reason": "tool_calls"}),
                lc("tool", '{"status": "enviado"}', "t1", name="lookup_order", tool_call_id="call_3", status="success"),
            ],
            ts=hours_ago(24),
        ),
    )
    archive()
    ai, tool = ConversationHistory.objects.order_by("position")
    assert ai.tool_calls == [call] and ai.metadata["response_metadata"] == {"finish_reason": "tool_calls"}
    assert (tool.name, tool.tool_call_id, tool.metadata["status"]) == ("lookup_order", "call_3", "success")


def test_rerun_after_crash_between_commit_and_delete_adds_nothing(plain_redis, monkeypatch):
    value = plain_value([simple("user", "sin id"), simple("user", "sin id"), lc("ai", "ok", "a1")], ts=hours_ago(24))
    plain_redis.set(KEY, value)
    from conversations.checkpoints.plain import PlainLayout

    def crash(self, client, conversations, check=None):
        raise KeyboardInterrupt("killed after commit")

    monkeypatch.setattr(PlainLayout, "delete_many", crash)
    with pytest.raises(KeyboardInterrupt):
        archive()
    assert ConversationHistory.objects.count() == 3
    assert plain_redis.get(KEY).decode() == value

    monkeypatch.undo()
    report = archive()
    assert (report.archived, report.messages) == (1, 0)
    assert ConversationHistory.objects.count() == 3
    assert not plain_redis.exists(KEY)


def test_written_to_during_the_run_stays_and_next_run_adds_only_new_messages(plain_redis, monkeypatch):
    first = [lc("human", "hola", "h1"), lc("ai", "buenas", "a1")]
    plain_redis.set(KEY, plain_value(first, ts=hours_ago(24)))
    from conversations import storage

    real_write = storage.write_conversations

    def bot_writes_meanwhile(conversations, now, since=None):
        result = real_write(conversations, now, since)
        plain_redis.set(KEY, plain_value(first + [lc("human", "¿sigues ahí?", "h2")], ts=hours_ago(0.01)))
        return result

    monkeypatch.setattr(storage, "write_conversations", bot_writes_meanwhile)
    report = archive()
    assert (report.archived, report.deferred, report.messages) == (0, 1, 2)
    assert plain_redis.exists(KEY)

    monkeypatch.undo()
    report = archive(now=hours_ago(-24))
    assert (report.archived, report.messages) == (1, 1)
    assert [r.content for r in ConversationHistory.objects.order_by("position")] == ["hola", "buenas", "¿sigues ahí?"]


def test_messages_without_ids_are_stored_once_when_a_deferred_conversation_is_read_again(plain_redis, monkeypatch):
    """The bot writes a new checkpoint (a new checkpoint id) while the run archives the old one:
    the id-less messages read again under the new checkpoint are the same messages."""
    first = [simple("user", "hola"), simple("assistant", "buenas")]
    plain_redis.set(KEY, plain_value(first, ts=hours_ago(24), checkpoint_id="1f1ebb25-0001"))
    from conversations import storage

    real_write = storage.write_conversations

    def bot_writes_meanwhile(conversations, now, since=None):
        result = real_write(conversations, now, since)
        later = plain_value(first + [simple("user", "¿sigues ahí?")], ts=hours_ago(0.01), checkpoint_id="1f1ebb25-0002")
        plain_redis.set(KEY, later)
        return result

    monkeypatch.setattr(storage, "write_conversations", bot_writes_meanwhile)
    assert archive().deferred == 1
    monkeypatch.undo()

    report = archive(now=hours_ago(-24))

    assert (report.archived, report.messages) == (1, 1)
    assert [r.content for r in ConversationHistory.objects.order_by("position")] == ["hola", "buenas", "¿sigues ahí?"]


def test_archiving_again_without_a_summary_keeps_the_one_archived(plain_redis):
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24), conversation_id="c1", summary="Saludo"))
    archive()
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1"), lc("ai", "buenas", "a1")], ts=hours_ago(24), conversation_id="c1"))

    archive()

    conversation = ArchivedConversation.objects.get(conversation_id="c1")
    assert (conversation.summary, conversation.message_count) == ("Saludo", 2)


def test_same_thread_starting_over_after_archival_is_appended(plain_redis):
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24), conversation_id="c1"))
    archive()
    plain_redis.set(KEY, plain_value([lc("human", "hola otra vez", "h9")], ts=hours_ago(24), conversation_id="c1"))
    archive()
    assert [(r.position, r.content) for r in ConversationHistory.objects.order_by("position")] == [
        (0, "hola"),
        (1, "hola otra vez"),
    ]
    assert ArchivedConversation.objects.get().message_count == 2


@pytest.mark.parametrize(
    "value, error",
    [
        (b"{not json", "not JSON"),
        (b"\x80\x04\x95pickle\x94.", "not JSON"),
        (json.dumps({"v": 4, "ts": "2026-01-01T00:00:00+00:00", "channel_values": {"messages": "hola"}}).encode(), "not a list"),
        (json.dumps({"v": 4, "ts": "2026-01-01T00:00:00+00:00", "channel_values": {}}).encode(), "no 'messages'"),
        (
            json.dumps(
                {"v": 4, "ts": "2026-01-01T00:00:00+00:00", "channel_values": {"messages": [
                    {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {"command": "touch /tmp/pwned"}}
                ]}}
            ).encode(),
            "not a LangChain message",
        ),
        (
            json.dumps({"v": 4, "ts": "2026-01-01T00:00:00+00:00", "channel_values": {"messages": [{"role": "user", "content": "a\u0000b"}]}}).encode(),
            "NUL",
        ),
    ],
)
def test_malformed_values_are_quarantined_and_the_run_goes_on(plain_redis, value, error):
    bad_key = "langgraph:checkpoint:bad:1"
    plain_redis.set(bad_key, value)
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24)))

    report = archive(now=hours_ago(-24 * 400))

    assert report.archived == 1 and report.quarantined == 1 and report.errors == 1
    quarantined = QuarantinedCheckpoint.objects.get()
    assert quarantined.key == bad_key and error in quarantined.error
    assert bytes(quarantined.raw_value) == value
    assert plain_redis.get(bad_key) == value  # kept in Redis too; it expires on its own

    again = archive(now=hours_ago(-24 * 400))
    assert again.errors == 0 and QuarantinedCheckpoint.objects.count() == 1


def test_a_non_string_key_is_quarantined_with_its_dump(plain_redis):
    plain_redis.hset("langgraph:checkpoint:hash:1", mapping={"a": "b"})
    report = archive()
    assert report.quarantined == 1
    quarantined = QuarantinedCheckpoint.objects.get()
    assert quarantined.redis_type == "hash" and bytes(quarantined.raw_value) == plain_redis.dump("langgraph:checkpoint:hash:1")


def test_dry_run_writes_and_deletes_nothing(plain_redis, tmp_path, settings):
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24)))
    report = archive(dry_run=True)
    assert report.found == 1 and report.messages == 1
    assert not ConversationHistory.objects.exists() and not ArchiveRun.objects.exists()
    assert plain_redis.exists(KEY)
    assert not (tmp_path / "archiver_health.json").exists()


def test_a_dry_run_counts_an_unreadable_value_and_keeps_nothing(plain_redis):
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24)))
    plain_redis.set("langgraph:checkpoint:broken:", b"{not json")
    report = archive(dry_run=True)
    assert (report.found, report.messages, report.quarantined) == (2, 1, 1)
    assert not QuarantinedCheckpoint.objects.exists() and plain_redis.exists("langgraph:checkpoint:broken:")


def test_keys_that_are_not_checkpoints_are_left_alone(plain_redis):
    plain_redis.set("session:abc", "x")
    plain_redis.set("langgraph:other", "y")
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(24)))
    archive()
    assert plain_redis.get("session:abc") == b"x" and plain_redis.get("langgraph:other") == b"y"


def test_small_batches_archive_everything(plain_redis):
    for i in range(25):
        plain_redis.set(f"langgraph:checkpoint:c{i}:1", plain_value([lc("human", f"m{i}", f"h{i}")], ts=hours_ago(24)))
    report = archive(batch_size=4)
    assert report.archived == 25 and ConversationHistory.objects.count() == 25
    assert not plain_redis.keys("langgraph:checkpoint:*")


def archived_first_seen_as(monkeypatch, view: dict) -> list:
    """The writer's first look at what the archive holds returns `view` (stale), later looks
    the truth; returns the list of looks."""
    from conversations.storage import write

    real, calls = write.read_archived, []

    def look(ids):
        calls.append(ids)
        return view if len(calls) == 1 else real(ids)

    monkeypatch.setattr(write, "read_archived", look)
    return calls


def test_rows_the_reader_did_not_see_are_not_duplicated(plain_redis, monkeypatch):
    """If rows appear between the check for archived keys and the COPY (only another writer
    could do that), the batch goes in through INSERT ... ON CONFLICT DO NOTHING instead, and
    the conversation's record counts the rows that are there, not the ones it meant to add."""
    plain_redis.set(KEY, plain_value([lc("human", "hola", "h1"), lc("ai", "buenas", "a1")], ts=hours_ago(24)))
    archive()
    plain_redis.set(KEY, plain_value([lc("ai", "buenas", "a1"), lc("human", "más", "h2")], ts=hours_ago(24)))
    calls = archived_first_seen_as(monkeypatch, {})  # blind to the rows the first run stored
    report = archive()
    assert report.errors == 0 and report.archived == 1
    assert len(calls) == 2  # blind, then the recount after the insert met rows already there
    assert sorted(ConversationHistory.objects.values_list("message_id", flat=True)) == ["a1", "h1", "h2"]
    assert ArchivedConversation.objects.get(conversation_id="wa-msg-abc123").message_count == 3


def test_copy_keeps_tabs_backslashes_and_newlines_byte_for_byte(plain_redis):
    text = "a\tb\\c\nd\re \\N \\\\t ñ 😀 明"
    plain_redis.set(KEY, plain_value([lc("human", text, "h1", additional_kwargs={"x": "tab\there\\"})], ts=hours_ago(24)))
    archive()
    row = ConversationHistory.objects.get()
    assert row.content == text and row.metadata == {"additional_kwargs": {"x": "tab\there\\"}}


def with_unapplied_input(value: str, messages: list[dict]) -> str:
    """The value with a run's input LangGraph has not applied yet (its `__start__` channel)."""
    doc = json.loads(value)
    doc["channel_values"]["__start__"] = {"messages": messages}
    return json.dumps(doc, ensure_ascii=False)


@pytest.mark.parametrize(
    "later, expected",
    [
        pytest.param(
            [lc("human", "gracias", "h2"), lc("ai", "De nada", "a2")],
            [("h1", "hola", "id:h1"), ("a1", "buenas", "id:a1"), ("h2", "gracias", "id:h2"), ("a2", "De nada", "id:a2")],
            id="applied: the provisional row takes its id",
        ),
        pytest.param(
            [lc("human", "otra cosa", "h3"), lc("human", "gracias", "h2")],
            [("h1", "hola", "id:h1"), ("a1", "buenas", "id:a1"), (None, "gracias", "input:"), ("h3", "otra cosa", "id:h3"), ("h2", "gracias", "id:h2")],
            id="the same text elsewhere: a message of its own",
        ),
    ],
)
def test_a_message_archived_before_it_had_an_id_is_stored_once(plain_redis, later, expected):
    earlier = [lc("human", "hola", "h1"), lc("ai", "buenas", "a1")]
    plain_redis.set(KEY, with_unapplied_input(plain_value(earlier, ts=hours_ago(30)), [lc("human", "gracias")]))
    assert archive().archived == 1
    plain_redis.set(KEY, plain_value(earlier + later, ts=hours_ago(29)))

    report = archive()

    assert report.archived == 1 and report.errors == 0
    rows = ConversationHistory.objects.filter(conversation_id="wa-msg-abc123").order_by("position")
    got = [(r.message_id, r.content, r.message_key if r.message_id else r.message_key[:6]) for r in rows]
    assert got == expected
    assert [r.position for r in rows] == list(range(len(expected)))


def test_a_provisional_row_gone_before_its_claim_leaves_the_message_stored(plain_redis, monkeypatch):
    """The provisional row was read, then removed (a purge, say) before the run gave it its
    id: the message goes in as a new row, and the conversation's record counts what is there."""
    from conversations.storage.archived import read_archived

    earlier = [lc("human", "hola", "h1"), lc("ai", "buenas", "a1")]
    plain_redis.set(KEY, with_unapplied_input(plain_value(earlier, ts=hours_ago(30)), [lc("human", "gracias")]))
    archive()
    stale = read_archived(["wa-msg-abc123"])
    ConversationHistory.objects.filter(message_key__startswith="input:").delete()
    calls = archived_first_seen_as(monkeypatch, stale)
    plain_redis.set(KEY, plain_value(earlier + [lc("human", "gracias", "h2"), lc("ai", "De nada", "a2")], ts=hours_ago(29)))

    report = archive()

    assert report.errors == 0 and report.archived == 1 and len(calls) == 2
    rows = ConversationHistory.objects.filter(conversation_id="wa-msg-abc123").order_by("position")
    assert [r.message_id for r in rows] == ["h1", "a1", "h2", "a2"]
    assert ArchivedConversation.objects.get(conversation_id="wa-msg-abc123").message_count == 4
