"""Conversations written by the real langgraph + langgraph-checkpoint-redis savers, archived,
and compared with what LangGraph's own get_state says the conversation holds."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.archiving import run_archive
from conversations.models import ArchivedConversation, ConversationHistory, QuarantinedCheckpoint
from conversations.options import Options
from harness import lgwriter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stack]

THREAD = "wa:34600111222:2026"  # thread ids with ':' must work


def archive(**kwargs):
    kwargs.setdefault("now", timezone.now() + timedelta(hours=24))
    return run_archive(Options.from_settings(**kwargs))


def archived(conversation_id: str) -> list[dict]:
    rows = ConversationHistory.objects.filter(conversation_id=conversation_id).order_by("position")
    return [
        {
            "type": r.role,
            "content": r.content_blocks if r.content_blocks is not None else r.content,
            "id": r.message_id,
            "name": r.name,
            "tool_calls": r.tool_calls or [],
            "tool_call_id": r.tool_call_id,
        }
        for r in rows
    ]


def stack_url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def remaining_keys(client) -> list[bytes]:
    return sorted(client.scan_iter(count=1000))


@pytest.mark.parametrize("saver", lgwriter.SAVERS)
@pytest.mark.parametrize(
    "shape",
    [
        {"tools": True, "subgraph": True},
        {"blocks": True, "pending": True},
        {"tools": True, "pending": True, "subgraph": True},
    ],
    ids=["tools+subgraph", "blocks+pending", "tools+pending+subgraph"],
)
def test_every_message_in_order_identical_to_get_state(stack_redis, saver, shape):
    url = stack_url(stack_redis)
    expected = lgwriter.write_conversation(
        url, THREAD, ["Hola, soy Lucía 👋", "¿Dónde está mi pedido?"], saver=saver,
        customer_id="cust-42", summary="Pedido ORD-2 en camino", **shape,
    )

    report = archive()

    assert report.errors == 0 and report.archived == 1
    assert archived(THREAD) == expected
    assert remaining_keys(stack_redis) == []
    conversation = ArchivedConversation.objects.get(conversation_id=THREAD)
    assert (conversation.customer_id, conversation.summary, conversation.message_count) == (
        "cust-42", "Pedido ORD-2 en camino", len(expected)
    )
    assert set(ConversationHistory.objects.values_list("customer_id", flat=True)) == {"cust-42"}


def test_state_conversation_id_wins_over_the_thread_id(stack_redis):
    expected = lgwriter.write_conversation(stack_url(stack_redis), THREAD, ["hola"], conversation_id="conv-77")
    archive()
    assert archived("conv-77") == expected
    assert not ConversationHistory.objects.filter(conversation_id=THREAD).exists()
    assert ConversationHistory.objects.filter(conversation_id="conv-77").first().thread_id == THREAD


def test_conversations_before_the_customer_is_known_are_archived(stack_redis):
    expected = lgwriter.write_conversation(stack_url(stack_redis), "anon-1", ["hola"])
    archive()
    assert archived("anon-1") == expected
    assert ConversationHistory.objects.filter(customer_id__isnull=True).count() == len(expected)


def test_young_conversations_are_left_alone_unless_about_to_expire(stack_redis):
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, "young", ["hola"])  # no TTL
    lgwriter.write_conversation(url, "expiring", ["hola"], ttl_minutes=30)  # 30 min left < 60 min buffer

    report = archive(now=timezone.now())

    assert report.archived == 1
    assert set(ConversationHistory.objects.values_list("conversation_id", flat=True)) == {"expiring"}
    assert stack_redis.exists("checkpoint_latest:young:__empty__")


def test_timestamps_come_from_the_checkpoints_and_never_go_backwards(stack_redis):
    url = stack_url(stack_redis)
    before = timezone.now()
    lgwriter.write_conversation(url, THREAD, ["primera"], tools=True)
    time.sleep(1.2)
    middle = timezone.now()
    expected = lgwriter.write_conversation(url, THREAD, ["segunda"], tools=True)
    after = timezone.now()

    archive(now=after + timedelta(hours=30))

    rows = list(ConversationHistory.objects.filter(conversation_id=THREAD).order_by("position"))
    assert len(rows) == len(expected) == 8
    times = [r.timestamp for r in rows]
    assert times == sorted(times)
    assert all(before <= t <= after for t in times)  # never the archiver's clock (30 h later)
    assert all(t < middle for t in times[:4]) and all(t >= middle for t in times[4:])


def test_rerun_after_a_crash_between_commit_and_delete_adds_nothing(stack_redis, monkeypatch):
    expected = lgwriter.write_conversation(stack_url(stack_redis), THREAD, ["hola", "adiós"], tools=True, pending=True)
    from conversations.checkpoints.saver import SaverLayout

    def killed(self, client, conversations, check=None):
        raise SystemExit("killed between commit and delete")

    monkeypatch.setattr(SaverLayout, "delete_many", killed)
    with pytest.raises(SystemExit):
        archive()
    assert archived(THREAD) == expected and remaining_keys(stack_redis)

    monkeypatch.undo()
    report = archive()
    assert (report.archived, report.messages) == (1, 0)
    assert archived(THREAD) == expected
    assert remaining_keys(stack_redis) == []


def test_a_conversation_written_to_during_the_run_stays_for_the_next(stack_redis, monkeypatch):
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, THREAD, ["hola"], tools=True)
    from conversations import storage

    real_write = storage.write_conversations
    bot = {}

    def bot_answers_meanwhile(conversations, now, since=None):
        result = real_write(conversations, now, since)
        bot["expected"] = lgwriter.write_conversation(url, THREAD, ["¿y el reembolso?"], tools=True)
        return result

    monkeypatch.setattr(storage, "write_conversations", bot_answers_meanwhile)
    first = archive()
    assert (first.archived, first.deferred) == (0, 1)
    assert stack_redis.exists(f"checkpoint_latest:{THREAD}:__empty__")

    monkeypatch.undo()
    second = archive()
    assert second.archived == 1 and second.messages == 4
    assert archived(THREAD) == bot["expected"]
    assert remaining_keys(stack_redis) == []


def test_pending_writes_in_unsafe_encodings_are_quarantined_not_read(stack_redis, tmp_path):
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, "good", ["hola"])
    lgwriter.write_conversation(url, THREAD, ["hola"], pending=True)
    zset = f"write_keys_zset:{THREAD}:__empty__:" + stack_redis.get(f"checkpoint_latest:{THREAD}:__empty__").decode().rsplit(":", 1)[1]
    marker = tmp_path / "pwned"
    for key in stack_redis.zrange(zset, 0, -1):
        if json.loads(stack_redis.execute_command("JSON.GET", key, "$.channel"))[0] == "messages":
            # A pickle that would create the marker file if anything unpickled it.
            payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
            stack_redis.execute_command("JSON.SET", key, "$.type", '"pickle"')
            stack_redis.execute_command("JSON.SET", key, "$.blob", json.dumps(base64.b64encode(payload).decode()))

    report = archive()

    assert report.archived == 1 and report.quarantined == 1 and report.errors == 1
    assert "'pickle'" in QuarantinedCheckpoint.objects.get().error
    assert not marker.exists()
    assert stack_redis.exists(f"checkpoint_latest:{THREAD}:__empty__")  # kept until it expires
    assert ConversationHistory.objects.filter(conversation_id="good").exists()
    assert not ConversationHistory.objects.filter(conversation_id=THREAD).exists()


def test_an_lc_envelope_naming_os_system_is_quarantined_and_never_run(stack_redis, tmp_path):
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, THREAD, ["hola"])
    key = stack_redis.get(f"checkpoint_latest:{THREAD}:__empty__")
    marker = tmp_path / "pwned"
    evil = {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {"command": f"touch {marker}"}}
    stack_redis.execute_command("JSON.SET", key, "$.checkpoint.channel_values.messages[0]", json.dumps(evil))

    report = archive()

    assert report.quarantined == 1 and report.errors == 1 and not marker.exists()
    quarantined = QuarantinedCheckpoint.objects.get()
    assert quarantined.key == key.decode() and "os.system" in quarantined.error
    assert json.loads(bytes(quarantined.raw_value))["checkpoint"]["channel_values"]["messages"][0] == evil


def test_dry_run_reads_real_checkpoints_and_changes_nothing(stack_redis):
    expected = lgwriter.write_conversation(stack_url(stack_redis), THREAD, ["hola"], tools=True, subgraph=True)
    keys = remaining_keys(stack_redis)
    report = archive(dry_run=True)
    assert (report.found, report.messages) == (1, len(expected))
    assert remaining_keys(stack_redis) == keys and not ConversationHistory.objects.exists()


def test_keys_of_other_threads_survive_a_threads_deletion(stack_redis):
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, "a:b", ["hola"], subgraph=True)
    lgwriter.write_conversation(url, "a:b:c", ["hola"], subgraph=True)  # a prefix-sharing neighbour
    stack_redis.set("unrelated", "1")
    stack_redis.persist(b"checkpoint_latest:a:b:c:__empty__")

    report = archive(now=timezone.now(), ttl_buffer_minutes=0.0001, cutoff_hours=1000)  # neither is due
    assert report.archived == 0

    layout_keys_before = {k for k in remaining_keys(stack_redis) if b"a:b:c:" in k}

    # Archive only a:b by making it due through its TTL.
    for key in stack_redis.scan_iter(match="*a:b:__empty__*"):
        stack_redis.expire(key, 60)
    report = archive(now=timezone.now())
    assert report.archived == 1
    assert ConversationHistory.objects.filter(conversation_id="a:b").exists()
    assert {k for k in remaining_keys(stack_redis) if b"a:b:c:" in k} == layout_keys_before
    assert stack_redis.get("unrelated") == b"1"


def store_unapplied_input(client, thread: str, text: str) -> None:
    """What LangGraph stores when the next turn begins, as if the bot died right after: an
    input checkpoint whose parent is the newest one, the previous messages, and the user's
    new message (no id yet) under __start__."""
    pointer = f"checkpoint_latest:{thread}:__empty__"
    newest = json.loads(client.execute_command("JSON.GET", client.get(pointer)))
    input_id = newest["checkpoint_id"][:-4] + "ffff"
    unapplied = {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"],
                 "kwargs": {"content": text, "type": "human"}}
    doc = json.loads(json.dumps(newest))
    doc.update(checkpoint_id=input_id, parent_checkpoint_id=newest["checkpoint_id"], source="input")
    doc["checkpoint"]["id"] = input_id
    doc["checkpoint"]["channel_values"]["__start__"] = {"messages": [unapplied]}
    key = f"checkpoint:{thread}:__empty__:{input_id}"
    client.execute_command("JSON.SET", key, "$", json.dumps(doc, ensure_ascii=False))
    client.set(pointer, key)


def test_a_users_message_the_bot_never_applied_is_archived(stack_redis):
    """The bot died right after LangGraph stored a run's input checkpoint: the user's message
    is only in its __start__ channel. It must be archived, not deleted with the thread."""
    expected = lgwriter.write_conversation(stack_url(stack_redis), THREAD, ["hola"])
    store_unapplied_input(stack_redis, THREAD, "¿sigue ahí? 📦")

    report = archive()

    assert report.errors == 0 and report.archived == 1
    rows = archived(THREAD)
    assert rows[:-1] == expected
    assert (rows[-1]["type"], rows[-1]["content"], rows[-1]["id"]) == ("human", "¿sigue ahí? 📦", None)
    assert remaining_keys(stack_redis) == []


def test_an_unapplied_message_written_again_later_is_a_message_of_its_own(stack_redis):
    """The archived input of a run that never went on is kept as it was read (provisional,
    waiting for the id LangGraph would give it). When the customer later writes the same text
    on the same thread, now empty, that is a new message: it does not follow the messages the
    provisional one followed, so it does not take its place."""
    url = stack_url(stack_redis)
    before = lgwriter.write_conversation(url, THREAD, ["hola"])
    store_unapplied_input(stack_redis, THREAD, "¿sigue ahí?")
    archive()

    again = lgwriter.write_conversation(url, THREAD, ["¿sigue ahí?"])
    report = archive()

    assert report.errors == 0 and report.archived == 1
    contents = [r["content"] for r in archived(THREAD)]
    assert contents == [m["content"] for m in before] + ["¿sigue ahí?"] + [m["content"] for m in again]
    assert ConversationHistory.objects.filter(message_key__startswith="input:").count() == 1


def test_the_very_first_input_checkpoint_is_archived_not_quarantined(stack_redis):
    """A thread whose only root checkpoint is its first input checkpoint (step -1: no
    'messages' key yet, the user's text under __start__)."""
    lgwriter.write_conversation(stack_url(stack_redis), "another", ["x"], ttl_minutes=600)  # the saver's indexes
    thread = "first-turn"
    cid = "1f1ebb97-0000-6000-8000-000000000001"
    doc = {
        "thread_id": thread, "run_id": "", "checkpoint_ns": "__empty__", "checkpoint_id": cid, "parent_checkpoint_id": "",
        "checkpoint_ts": (timezone.now() - timedelta(hours=2)).timestamp() * 1000,
        "checkpoint": {"v": 4, "ts": (timezone.now() - timedelta(hours=2)).isoformat(), "id": cid,
                       "channel_values": {"__start__": {"messages": [["user", "hola, soy nueva"]], "customer_id": "cust-9"}}},
        "metadata": "{}", "source": "input", "step": -1,
    }
    stack_redis.execute_command("JSON.SET", f"checkpoint:{thread}:__empty__:{cid}", "$", json.dumps(doc))
    stack_redis.set(f"checkpoint_latest:{thread}:__empty__", f"checkpoint:{thread}:__empty__:{cid}")

    report = archive()

    assert report.errors == 0 and report.quarantined == 0
    row = ConversationHistory.objects.get(conversation_id=thread)
    assert (row.role, row.content, row.customer_id) == ("human", "hola, soy nueva", "cust-9")


def test_a_redis_without_the_savers_index_is_one_clear_error(stack_redis):
    stack_redis.set("checkpoint_latest:t:__empty__", "checkpoint:t:__empty__:1")
    stack_redis.execute_command("JSON.SET", "checkpoint:t:__empty__:1", "$", json.dumps(
        {"checkpoint_id": "1", "checkpoint": {"ts": "2026-01-01T00:00:00+00:00", "id": "1", "channel_values": {"messages": [{"role": "user", "content": "x"}]}}}
    ))
    report = archive()
    assert report.errors == 1 and "no search index 'checkpoint'" in report.error_messages[0]
    assert not ConversationHistory.objects.exists()
    assert stack_redis.exists("checkpoint_latest:t:__empty__", "checkpoint:t:__empty__:1") == 2


@pytest.mark.parametrize("saver", ["redis", "shallow"])
def test_a_write_registered_between_the_search_and_the_delete_keeps_the_thread(stack_redis, monkeypatch, saver):
    """The bot's put_writes stores and registers a pending write after the delete's search
    looked at the thread and before its script runs: only the script's own count of the
    registered writes can see it, and the thread must stay for the next run."""
    from langchain_core.messages import AIMessage

    from conversations.checkpoints import indexed

    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, THREAD, ["hola"], saver=saver)
    real_search = indexed.search_threads
    late = AIMessage(content="Un momento, lo compruebo 🔎", id="late-1")

    def bot_writes_after_the_search(client, index, threads):
        found = real_search(client, index, threads)
        if index == "checkpoint_write":
            with lgwriter._saver_class(saver).from_conn_string(url) as bot:
                bot.setup()  # as every bot does: it also makes the saver register its writes
                config = bot.get_tuple({"configurable": {"thread_id": THREAD}}).config
                bot.put_writes(config, [("messages", [late])], task_id="late-task")
        return found

    monkeypatch.setattr(indexed, "search_threads", bot_writes_after_the_search)
    first = archive()
    monkeypatch.undo()
    assert (first.archived, first.deferred) == (0, 1)
    assert lgwriter.conversation_state(url, THREAD, saver=saver)["messages"]  # still in Redis

    second = archive()

    assert (second.archived, second.messages) == (1, 1)
    assert archived(THREAD)[-1]["id"] == "late-1"
    assert remaining_keys(stack_redis) == []


def test_a_subgraph_checkpoint_written_during_the_run_defers_the_thread(stack_redis, monkeypatch):
    """A checkpoint of any namespace that appears between the read and the delete means the bot
    is at work on the thread: its keys stay for the next run (deferred, not an error)."""
    from conversations import storage

    url = stack_url(stack_redis)
    expected = lgwriter.write_conversation(url, THREAD, ["hola"], subgraph=True)
    subgraph_doc = next(k for k in stack_redis.scan_iter(match=f"checkpoint:{THREAD}:review:*", count=1000))
    real_write = storage.write_conversations

    def bot_writes_a_subgraph_checkpoint_meanwhile(conversations, now, since=None):
        written = real_write(conversations, now, since)
        doc = json.loads(stack_redis.execute_command("JSON.GET", subgraph_doc))
        doc["checkpoint_id"] = doc["checkpoint"]["id"] = doc["checkpoint_id"][:-4] + "ffff"
        stack_redis.execute_command("JSON.SET", subgraph_doc.decode().rsplit(":", 1)[0] + ":" + doc["checkpoint_id"], "$", json.dumps(doc))
        return written

    monkeypatch.setattr(storage, "write_conversations", bot_writes_a_subgraph_checkpoint_meanwhile)
    first = archive()
    monkeypatch.undo()
    assert (first.archived, first.deferred, first.errors) == (0, 1, 0)

    second = archive()
    assert (second.archived, second.errors) == (1, 0)
    assert archived(THREAD) == expected and remaining_keys(stack_redis) == []


def test_the_shallow_savers_own_prefixes_are_the_settings(stack_redis, settings):
    """The shallow savers' write registry and current-checkpoint tracker under prefixes of the
    settings, not the savers' defaults. The saver cannot be told these two prefixes, so its
    registry is renamed as such a deployment would have it, and a tracker (which older shallow
    savers leave) is made by hand: the pending turn is read through the registry, and every
    key of the thread goes."""
    url = stack_url(stack_redis)
    expected = lgwriter.write_conversation(url, THREAD, ["hola"], saver="shallow", pending=True)
    registries = list(stack_redis.scan_iter(match="write_registry:*", count=1000))
    assert registries and all(stack_redis.zcard(k) for k in registries)  # the pending turn's writes
    for key in registries:
        stack_redis.rename(key, b"bot-registry" + key[len(b"write_registry"):])
    stack_redis.set(f"bot-current:{THREAD}:__empty__:shallow", f"checkpoint:{THREAD}:")
    settings.ARCHIVER = {**settings.ARCHIVER, "WRITE_REGISTRY_PREFIX": "bot-registry", "CURRENT_CHECKPOINT_PREFIX": "bot-current"}

    report = archive()

    assert (report.errors, report.archived) == (0, 1), report.error_messages
    assert archived(THREAD) == expected
    assert remaining_keys(stack_redis) == []
