"""Hostile and broken values in Redis, generated with hypothesis and named one by one.

Whatever a value is (random bytes, truncated or deeply nested JSON, wrong types in any field,
10 MB strings, lc envelopes naming os.system or subprocess, pickle and msgpack payloads as
plain values or as pending writes, key names that are not UTF-8, thread ids the search index
cannot tell apart), the archiver must:
- never run it: the payloads would create a marker file if anything unpickled, imported or
  unpacked them (test_the_payloads_are_armed shows that they would);
- keep it: a value gone from Redis has its messages archived; one it cannot read is copied
  once, byte for byte, into quarantined_checkpoint and left in Redis;
- finish the run and archive the healthy conversations of the same batch, counting one error
  per quarantined value and nothing else.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import pickle
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
import redis
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conversations import conf
from conversations.archiving import run_archive
from conversations.checkpoints.redisjson import thread_query
from conversations.models import ConversationHistory, QuarantinedCheckpoint
from conversations.options import Options
from conversations.runs import RunReport
from harness import lgwriter
from harness.reliability import processes
from tests.factories import hours_ago, lc, plain_value

pytestmark = pytest.mark.django_db(transaction=True)

HYPOTHESIS = hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
PREFIX = conf.DEFAULTS["PLAIN_PREFIX"].encode()


# --- payloads that would run code ---------------------------------------------------------


def pickle_payload(marker: Path) -> bytes:
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def msgpack_payload(marker: Path) -> bytes:
    """langgraph's msgpack extension 0: import module, take the name, call it with the argument."""
    return ormsgpack.packb(ormsgpack.Ext(0, ormsgpack.packb(["os", "system", f"touch {marker}"])))


def lc_envelopes(marker: Path) -> list[dict[str, Any]]:
    return [
        {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {"command": f"touch {marker}"}},
        {"lc": 1, "type": "constructor", "id": ["subprocess", "Popen"], "kwargs": {"args": ["touch", str(marker)]}},
    ]


def test_the_payloads_are_armed(tmp_path):
    """The marker check means something: each payload creates the marker when read the way an
    unsafe reader would (pickle, langgraph's msgpack in its default mode, importing what an lc
    envelope names)."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    marker = tmp_path / "armed"
    pickle.loads(pickle_payload(marker))
    assert marker.exists()
    marker.unlink()
    JsonPlusSerializer(allowed_msgpack_modules=True).loads_typed(("msgpack", msgpack_payload(marker)))
    assert marker.exists()
    for envelope in lc_envelopes(marker):
        marker.unlink()
        *module, name = envelope["id"]
        made = getattr(importlib.import_module(".".join(module)), name)(**envelope["kwargs"])
        if isinstance(made, subprocess.Popen):
            made.wait(10)  # reap the child the payload started
        for _ in range(100):
            if marker.exists():
                break
            time.sleep(0.02)
        assert marker.exists()


# --- plain-layout values ------------------------------------------------------------------


def healthy(client: redis.Redis, n: int = 3) -> dict[str, list[str]]:
    """Healthy conversations in the same SCAN batch as the hostile values."""
    expected = {}
    for i in range(n):
        contents = [f"hola {i} ñ", f"buenas {i} 🙏"]
        client.set(f"langgraph:checkpoint:ok-{i}:1", plain_value(
            [lc("human", contents[0], f"ok-{i}-h"), lc("ai", contents[1], f"ok-{i}-a")], ts=hours_ago(30), conversation_id=f"ok-{i}",
        ))
        expected[f"ok-{i}"] = contents
    return expected


def reset(client: redis.Redis) -> None:
    client.flushdb()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(processes.TABLES)}")


def printable(key: bytes) -> str:
    """How a key name that may not be UTF-8 appears in the quarantine table."""
    return key.decode("utf-8", "surrogateescape").encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def check_run(client: redis.Redis, report: RunReport, hostile: list[bytes], expected: dict[str, list[str]], marker: Path,
              values: dict[bytes, bytes] | None = None) -> None:
    assert not marker.exists(), "stored data was executed"
    for conversation_id, contents in expected.items():
        rows = list(ConversationHistory.objects.filter(conversation_id=conversation_id).order_by("position").values_list("content", flat=True))
        assert rows == contents, f"the healthy conversation {conversation_id} was not archived: {report.error_messages[:3]}"
    assert report.errors == report.quarantined, f"errors other than quarantines: {report.error_messages[:5]}"
    for key in hostile:
        quarantined = list(QuarantinedCheckpoint.objects.filter(key=printable(key)))
        if not client.exists(key):
            thread = key[len(PREFIX):].rsplit(b":", 1)[0].decode("utf-8", "surrogateescape")
            archived = ConversationHistory.objects.filter(Q(thread_id=thread) | Q(conversation_id__in=claimed_ids(values, key)))
            assert archived.exists(), f"{key[:80]!r} is gone from Redis and not archived"
        assert len(quarantined) <= 1
        if quarantined and values is not None:
            assert bytes(quarantined[0].raw_value) == values[key]


def claimed_ids(values: dict[bytes, bytes] | None, key: bytes) -> list[str]:
    """The conversation id a readable value names for itself (two values may name the same one:
    their messages are then archived once, under it)."""
    try:
        doc = json.loads((values or {}).get(key, b""))
    except ValueError:
        return []
    for state in (doc.get("channel_values"), doc.get("data"), doc) if isinstance(doc, dict) else ():
        if isinstance(state, dict) and state.get("conversation_id") not in (None, ""):
            return [str(state["conversation_id"])]
    return []


def valid_plain(messages: list[Any] | None = None) -> dict[str, Any]:
    return {
        "v": 4, "ts": "2026-01-01T00:00:00+00:00", "id": "1f1ebb25-0000",
        "channel_values": {
            "messages": messages or [lc("human", "hola", "h1"), {"role": "assistant", "content": "buenas", "timestamp": "2026-01-01T00:00:00+00:00"}],
            "conversation_id": "c-1", "customer_id": "cust-1", "conversation_summary": "resumen",
        },
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
FIELDS = [
    ("ts",), ("id",), ("channel_values",), ("channel_values", "messages"), ("channel_values", "messages", 0),
    ("channel_values", "messages", 0, "kwargs"), ("channel_values", "messages", 0, "kwargs", "content"),
    ("channel_values", "messages", 0, "kwargs", "id"), ("channel_values", "messages", 0, "kwargs", "type"),
    ("channel_values", "messages", 0, "kwargs", "tool_calls"), ("channel_values", "messages", 0, "kwargs", "additional_kwargs"),
    ("channel_values", "messages", 0, "id"), ("channel_values", "messages", 0, "type"), ("channel_values", "messages", 0, "lc"),
    ("channel_values", "messages", 1, "role"), ("channel_values", "messages", 1, "content"),
    ("channel_values", "messages", 1, "timestamp"), ("channel_values", "conversation_id"),
    ("channel_values", "customer_id"), ("channel_values", "conversation_summary"),
]


def with_field(path: tuple[Any, ...], value: Any) -> bytes:
    doc = valid_plain()
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(depth: int, leaf: Any = "x") -> str:
    return "[" * depth + json.dumps(leaf) + "]" * depth


@st.composite
def hostile_plain_values(draw: st.DrawFn, marker: Path) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "json", "field", "truncated", "deep", "escape", "payload"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "field":
        return with_field(draw(st.sampled_from(FIELDS)), draw(json_values))
    if kind == "truncated":
        raw = json.dumps(valid_plain()).encode()
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "deep":
        depth = draw(st.integers(200, 5000))
        long_number = draw(st.booleans())  # sends the document to the exact-number parser
        where = draw(st.sampled_from(["messages", "content", "metadata", "state"]))
        body = {
            "messages": nested(depth),
            "content": json.dumps([lc("human", [{"type": "text", "text": "x", "deep": "@"}])]).replace('"@"', nested(depth)),
            "metadata": json.dumps([lc("human", "x", "d1", additional_kwargs={"deep": "@"})]).replace('"@"', nested(depth)),
            "state": json.dumps([lc("human", "x", "d2")]) + ', "extra": ' + nested(depth),
        }[where]
        number = '"n": 123456789012345678901234, ' if long_number else ""
        return ('{' + number + '"ts": "2026-01-01T00:00:00+00:00", "channel_values": {"messages": ' + body + "}}").encode()
    if kind == "escape":
        escape = draw(st.sampled_from(["\\u0000", "\\ud800", "\\udfff", "\\ud83d", "\\\\", "\\n"]))
        long_number = draw(st.booleans())
        raw = json.dumps(valid_plain()).replace('"hola"', f'"ho{escape}la"')
        if long_number:
            raw = raw.replace('"v": 4', '"v": 123456789012345678901234')
        return raw.encode()
    if kind == "payload":
        envelopes = lc_envelopes(marker)
        return draw(st.sampled_from([
            pickle_payload(marker), msgpack_payload(marker),
            json.dumps(valid_plain([envelopes[0]])).encode(), json.dumps(valid_plain([envelopes[1]])).encode(),
            json.dumps(valid_plain([lc("human", "x", "h"), envelopes[0]])).encode(),
        ]))
    raise AssertionError(kind)


@given(data=st.data())
@HYPOTHESIS
def test_hostile_plain_values_are_quarantined_never_run_and_do_not_stop_the_run(plain_redis, tmp_path, data):
    marker = tmp_path / "pwned"
    reset(plain_redis)
    expected = healthy(plain_redis)
    values = {}
    for i in range(data.draw(st.integers(1, 3))):
        suffix = data.draw(st.one_of(st.just(f"hostile-{i}".encode()), st.binary(min_size=1, max_size=20)), label="key")
        key = PREFIX + suffix + b":9" + str(i).encode()  # never a healthy conversation's key
        values[key] = data.draw(hostile_plain_values(marker), label="value")
        plain_redis.set(key, values[key])

    report = run_archive(Options.from_settings())

    check_run(plain_redis, report, list(values), expected, marker, values)
    again = run_archive(Options.from_settings())
    assert again.quarantined == 0 and not marker.exists()  # quarantined once, not on every run
    assert ConversationHistory.objects.filter(conversation_id__startswith="ok-").count() == 6


def words(megabytes: int) -> str:
    """Text with as many distinct words as a big tool output: more than a tsvector can hold."""
    raw = os.urandom(megabytes * 2**20 // 2).hex()
    return " ".join(raw[i : i + 9] for i in range(0, len(raw), 9))


def long_text(n: int = 4000) -> str:
    return os.urandom(n // 2).hex()


NAMED = {
    "deep JSON read by the exact-number parser (RecursionError)": lambda: (
        '{"n": 123456789012345678901234, "ts": "2026-01-01T00:00:00+00:00", "channel_values": {"messages": ' + nested(5000) + "}}"
    ).encode(),
    "content blocks nested 300 deep (past orjson's 255 when written)": lambda: json.dumps(
        valid_plain([lc("human", [{"type": "text", "text": "x", "deep": json.loads(nested(300))}], "b1")])).encode(),
    "metadata nested 300 deep": lambda: json.dumps(valid_plain([lc("human", "x", "m1", additional_kwargs={"deep": json.loads(nested(300))})])).encode(),
    "a message without id nested 900 deep (its digest)": lambda: json.dumps(
        valid_plain([lc("human", [{"type": "x", "deep": json.loads(nested(900))}])])).encode(),
    "a lone surrogate read by the exact-number parser": lambda: json.dumps(valid_plain()).replace('"hola"', '"a\\ud800b"').replace('"v": 4', '"v": 123456789012345678901234').encode(),
    "a NUL character": lambda: json.dumps(valid_plain()).replace('"hola"', '"a\\u0000b"').encode(),
    "a message id of 4000 characters (past the unique index's row size)": lambda: json.dumps(valid_plain([lc("human", "x", long_text())])).encode(),
    "a customer id of 4000 characters": lambda: with_field(("channel_values", "customer_id"), long_text()),
    "a conversation id of 4000 characters": lambda: with_field(("channel_values", "conversation_id"), long_text()),
    "3 MB of distinct words (past the 1 MB a tsvector holds)": lambda: json.dumps(valid_plain([lc("tool", words(3), "w1")])).encode(),
    "10 MB of garbage": lambda: b"\x80" + os.urandom(10 * 2**20),
}


@pytest.mark.parametrize("name", list(NAMED))
def test_named_hostile_values(plain_redis, tmp_path, name):
    marker = tmp_path / "pwned"
    expected = healthy(plain_redis)
    key = PREFIX + b"hostile:1"
    value = NAMED[name]()
    plain_redis.set(key, value)

    report = run_archive(Options.from_settings())

    check_run(plain_redis, report, [key], expected, marker, {key: value})
    assert plain_redis.exists(key) and report.quarantined == 1, report.error_messages


def test_a_10_mb_message_postgresql_can_hold_is_archived_intact(plain_redis):
    big = "ñ" * (5 * 2**20) + " fin"  # 10 MB of UTF-8, one word
    plain_redis.set(PREFIX + b"big:1", json.dumps(valid_plain([lc("human", big, "big-1")])))
    report = run_archive(Options.from_settings())
    assert report.errors == 0 and report.archived == 1
    assert ConversationHistory.objects.get(message_id="big-1").content == big


@pytest.mark.parametrize("raw_key", [b"\xff\xfe-conv", b"a\x00b", b"\xed\xa0\x80"], ids=["not-utf8", "nul", "encoded-surrogate"])
def test_key_names_that_are_not_text(plain_redis, tmp_path, raw_key):
    """Redis key names are bytes. A conversation under a name PostgreSQL cannot store as text
    is quarantined (its name escaped), and its batch goes on."""
    marker = tmp_path / "pwned"
    expected = healthy(plain_redis)
    good_value = plain_value([lc("human", "hola", "k1")], ts=hours_ago(30))
    keys = [PREFIX + raw_key + b":1", PREFIX + raw_key + b":2"]
    plain_redis.set(keys[0], good_value)
    plain_redis.set(keys[1], b"not json")

    report = run_archive(Options.from_settings())

    check_run(plain_redis, report, keys, expected, marker, {keys[0]: good_value.encode(), keys[1]: b"not json"})
    assert all(plain_redis.exists(k) for k in keys)
    assert [QuarantinedCheckpoint.objects.filter(key=printable(k)).count() for k in keys] == [1, 1]


# --- the savers' layout: checkpoint documents and pending writes ----------------------------


def stack_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


_TEMPLATE: dict[str, Any] = {}


def saver_template(client: redis.Redis) -> dict[str, Any]:
    """Two real conversations (RedisSaver; the target has messages in pending writes), written
    once and kept as raw values, so that each example restores them in milliseconds."""
    if not _TEMPLATE:
        url = stack_url(client)
        client.flushdb()
        _TEMPLATE["expected"] = {
            "target": lgwriter.write_conversation(url, "target", ["hola", "¿mi pedido?"], tools=True, pending=True),
            "neighbour": lgwriter.write_conversation(url, "neighbour", ["hola"], tools=True),
        }
        keys = {}
        for raw in client.scan_iter(count=1000):
            kind = client.type(raw).decode()
            if kind == "ReJSON-RL":
                keys[raw] = (kind, client.execute_command("JSON.GET", raw))
            elif kind == "string":
                keys[raw] = (kind, client.get(raw))
            elif kind == "zset":
                keys[raw] = (kind, client.zrange(raw, 0, -1, withscores=True))
        _TEMPLATE["keys"] = keys
        client.flushdb()
    return _TEMPLATE


def restore(client: redis.Redis, template: dict[str, Any]) -> None:
    reset(client)
    processes.create_indexes(stack_url(client))
    pipe = client.pipeline(transaction=False)
    for key, (kind, value) in template["keys"].items():
        if kind == "ReJSON-RL":
            pipe.execute_command("JSON.SET", key, "$", value)
        elif kind == "string":
            pipe.set(key, value)
        else:
            pipe.zadd(key, dict(value))
    pipe.execute()


def checkpoint_key(client: redis.Redis, thread: str) -> bytes:
    return client.get(f"checkpoint_latest:{thread}:__empty__")


def pending_message_writes(client: redis.Redis, thread: str) -> list[bytes]:
    cid = checkpoint_key(client, thread).decode().rsplit(":", 1)[1]
    return [k for k in client.zrange(f"write_keys_zset:{thread}:__empty__:{cid}", 0, -1)
            if json.loads(client.execute_command("JSON.GET", k, "$.channel"))[0] == "messages"]


SAVER_PATHS = [
    "$.checkpoint", "$.checkpoint.ts", "$.checkpoint.id", "$.checkpoint_id", "$.checkpoint.channel_values",
    "$.checkpoint.channel_values.messages", "$.checkpoint.channel_values.messages[0]",
    "$.checkpoint.channel_values.messages[0].kwargs", "$.checkpoint.channel_values.messages[0].kwargs.content",
    "$.checkpoint.channel_values.messages[0].kwargs.id", "$.checkpoint.channel_values.messages[0].kwargs.type",
    "$.checkpoint.channel_values.messages[0].id", "$.checkpoint.channel_values.messages[1].kwargs.tool_calls",
    "$.checkpoint.channel_values.customer_id", "$.checkpoint.channel_values.conversation_id", "$.thread_id",
]


@st.composite
def saver_mutations(draw: st.DrawFn, marker: Path) -> tuple[str, Any, Any]:
    kind = draw(st.sampled_from(["field", "write-type", "write-blob", "pointer", "document"]))
    if kind == "field":
        return kind, draw(st.sampled_from(SAVER_PATHS)), draw(st.one_of(json_values, st.sampled_from(lc_envelopes(marker))))
    if kind == "write-type":
        encoding = draw(st.sampled_from(["pickle", "msgpack", "bytes", "null", ""]) | st.text(max_size=10))
        return kind, encoding, draw(st.sampled_from([pickle_payload(marker), msgpack_payload(marker)]))
    if kind == "write-blob":
        blob = draw(st.one_of(
            st.binary(max_size=300),
            st.just(pickle_payload(marker)), st.just(msgpack_payload(marker)),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.just(json.dumps(lc_envelopes(marker)).encode()),
            st.integers(200, 3000).map(lambda n: nested(n).encode()),
        ))
        encoded = draw(st.booleans())
        return kind, None, base64.b64encode(blob).decode() if encoded else blob.decode("latin-1")
    if kind == "pointer":
        return kind, None, draw(st.binary(max_size=100))
    return kind, None, draw(st.binary(max_size=300))


@pytest.mark.stack
@given(data=st.data())
@HYPOTHESIS
def test_hostile_saver_documents_and_pending_writes(stack_redis, tmp_path, data):
    marker = tmp_path / "pwned"
    template = saver_template(stack_redis)
    restore(stack_redis, template)
    kind, where, value = data.draw(saver_mutations(marker))
    target = checkpoint_key(stack_redis, "target")
    if kind == "field":
        try:
            stack_redis.execute_command("JSON.SET", target, where, json.dumps(value))
        except redis.ResponseError:
            pass  # a path this document does not have: the example stays a healthy conversation
    elif kind in ("write-type", "write-blob"):
        for key in pending_message_writes(stack_redis, "target"):
            if kind == "write-type":
                stack_redis.execute_command("JSON.SET", key, "$.type", json.dumps(where))
                stack_redis.execute_command("JSON.SET", key, "$.blob", json.dumps(base64.b64encode(value).decode()))
            else:
                stack_redis.execute_command("JSON.SET", key, "$.blob", json.dumps(value))
    elif kind == "pointer":
        stack_redis.set("checkpoint_latest:target:__empty__", value)
    else:
        stack_redis.delete(target)
        stack_redis.set(target, value)

    report = run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=24)))

    assert not marker.exists()
    # Every error is a quarantined value, or a thread the delete guard kept whole in Redis
    # (the edit left a message only where the history does not look, an old run's input).
    refused = [m for m in report.error_messages if "the delete guard refused" in m]
    assert report.errors == report.quarantined + len(refused), report.error_messages[:5]
    if refused:
        assert stack_redis.exists("checkpoint_latest:target:__empty__")
    neighbour = list(ConversationHistory.objects.filter(conversation_id="neighbour").order_by("position").values_list("message_id", flat=True))
    assert neighbour == [m["id"] for m in template["expected"]["neighbour"]]
    if not stack_redis.exists("checkpoint_latest:target:__empty__"):
        assert ConversationHistory.objects.filter(thread_id="target").exists(), "the target is gone from Redis and not archived"
    assert QuarantinedCheckpoint.objects.count() <= 1


# --- thread ids -----------------------------------------------------------------------------

thread_ids = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@pytest.mark.stack
@given(thread=thread_ids, twist=st.sampled_from(["swapcase", "upper", "lower", "comma-after", "comma-before", "colon", "space"]),
       saver=st.sampled_from(["redis", "shallow"]))
@example(thread="", twist="colon", saver="shallow")
@example(thread="Conv-A", twist="lower", saver="redis")
@example(thread="x", twist="comma-after", saver="shallow")
@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_thread_id_is_archived_once_and_no_other_thread_is_touched(stack_redis, thread, twist, saver):
    neighbour = {
        "swapcase": thread.swapcase(), "upper": thread.upper(), "lower": thread.lower(), "comma-after": f"{thread},x",
        "comma-before": f"x,{thread}", "colon": f"{thread}:x", "space": f" {thread} ",
    }[twist]
    url = stack_url(stack_redis)
    reset(stack_redis)
    kept = lgwriter.write_conversation(url, neighbour, ["sigo aquí"], saver=saver) if neighbour != thread else []
    neighbours_keys = set(stack_redis.scan_iter(count=1000))
    expected = lgwriter.write_conversation(url, thread, ["hola"], saver=saver, ttl_minutes=30)  # due: about to expire
    threads_keys = set(stack_redis.scan_iter(count=1000)) - neighbours_keys
    findable = index_lists(stack_redis, thread, saver)

    report = run_archive(Options.from_settings())

    ids = [m["id"] for m in expected]
    if "\x00" in thread:  # PostgreSQL text cannot hold a NUL: the conversation is quarantined and stays
        assert (report.quarantined, report.errors, report.archived) == (1, 1, 0), report.error_messages
        assert threads_keys <= set(stack_redis.scan_iter(count=1000))
        return
    assert report.errors == 0, report.error_messages
    assert list(ConversationHistory.objects.filter(message_id__in=ids).order_by("position").values_list("message_id", flat=True)) == ids
    if neighbour != thread:
        assert lgwriter.conversation_state(url, neighbour, saver=saver)["messages"] == kept
        assert not ConversationHistory.objects.filter(message_id__in=[m["id"] for m in kept]).exists()
    left = set(stack_redis.scan_iter(count=1000))
    assert neighbours_keys <= left  # not one key of the other thread was deleted
    if findable:
        assert (report.archived, left) == (1, neighbours_keys)  # and nothing of the archived thread is left behind
    else:
        # RediSearch cannot match this thread's tag, so not all its keys can be found: all stay.
        assert (report.deferred, left) == (1, neighbours_keys | threads_keys)


def index_lists(client: redis.Redis, thread: str, saver: str) -> bool:
    """Whether the savers' search index returns the thread's own newest checkpoint for its id."""
    stored = "00000000-0000-0000-0000-000000000000" if thread == "" and saver == "redis" else thread  # RedisSaver's name for ""
    newest = client.get(f"checkpoint_latest:{stored}:__empty__") if saver == "redis" else f"checkpoint:{thread}:".encode()
    resp2 = redis.Redis.from_url(stack_url(client), protocol=2)
    try:
        found = resp2.execute_command("FT.SEARCH", "checkpoint", thread_query(stored), "NOCONTENT", "LIMIT", 0, 1000, "DIALECT", 2)
    except redis.ResponseError:
        return False
    finally:
        resp2.close()
    return newest in found[1:]
