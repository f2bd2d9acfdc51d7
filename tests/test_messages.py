"""Reading messages from stored state: pure functions, no servers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conversations.checkpoints import jsontext
from conversations.checkpoints.jsontext import parse_json
from conversations.checkpoints.messages import Message, parse_message, parse_time
from conversations.checkpoints.redisjson import escape_tag
from conversations.checkpoints.state import State, check_storable, merge_messages, message_keys
from conversations.exceptions import MalformedCheckpoint
from tests.factories import lc

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


def msg(id=None, content="x", own=None) -> Message:
    return Message("human", content, None, id, None, None, None, {}, own)


def test_message_to_dict_form_and_chat_roles_are_read():
    assert parse_message({"type": "human", "data": {"content": "hola", "id": "1"}}, 0).role == "human"
    chat = {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "ChatMessage"], "kwargs": {"content": "x", "role": "assistant"}}
    assert parse_message(chat, 0).role == "ai"


def test_everything_else_a_message_carries_is_kept_in_metadata():
    m = parse_message(lc("ai", "ok", "a1", usage_metadata={"input_tokens": 3}, invalid_tool_calls=[], additional_kwargs={"k": "v"}), 0)
    assert m.metadata == {"usage_metadata": {"input_tokens": 3}, "invalid_tool_calls": [], "additional_kwargs": {"k": "v"}}


@pytest.mark.parametrize(
    "raw, error",
    [
        ("hola", "not an object"),
        ({"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}, "unreadable kind"),
        ({"lc": 1, "type": "constructor", "id": ["subprocess", "check_call"], "kwargs": {}}, "not a LangChain message"),
        ({"lc": 1, "type": "constructor", "id": ["evil", "schema", "messages", "AIMessage"], "kwargs": {"content": ""}}, "not a LangChain message"),
        ({"lc": 1, "type": "constructor", "id": [[]], "kwargs": {"content": "hola"}}, "not a LangChain message"),  # found by hypothesis
        (lc("human", {"text": "dict content"}), "content of type dict"),
        (lc("human", "x", id=7), "'id' of type int"),
        ({"role": 1, "content": "x"}, "role of type int"),
        ({"role": "user", "content": "x", "timestamp": "yesterday"}, "unreadable timestamp"),
        ({"foo": "bar"}, "neither"),
    ],
)
def test_unreadable_messages_are_refused_with_a_reason(raw, error):
    with pytest.raises(MalformedCheckpoint, match=error):
        parse_message(raw, 0)


def test_the_delete_guard_reads_past_an_envelope_naming_no_class():
    from conversations.checkpoints.base import Held
    from conversations.checkpoints.held import held_in

    held = Held()
    held_in({"messages": [{"lc": 1, "type": "constructor", "id": [[]], "kwargs": {"content": "hola", "type": "human", "id": "h1"}}]}, held)
    assert held.ids == {"h1"}  # its fields read as a message: the guard errs on keeping the keys


def test_naive_and_epoch_times():
    assert parse_time("2026-11-28T10:00:00").utcoffset() == timedelta(hours=1)  # read in Europe/Madrid
    assert parse_time(1795928661074.514) == parse_time(1795928661.074514)
    with pytest.raises(ValueError):
        parse_time(True)


def test_keys_use_ids_and_otherwise_tell_identical_messages_apart_stably():
    messages = [msg("a"), msg(None, "hola"), msg(None, "hola"), msg(None, "adiós")]
    keys = message_keys(messages, "plain:k")
    assert keys[0] == "id:a" and len(set(keys)) == 4
    assert message_keys(messages + [msg(None, "hola")], "plain:k")[:4] == keys  # appending keeps earlier keys
    assert message_keys(messages, "plain:other")[1] != keys[1]


def test_pending_writes_merge_like_add_messages():
    merged = merge_messages([msg("a", "1"), msg("b", "2")], [msg("b", "2 edited"), msg("c", "3"), msg(None, "4")])
    assert [(m.message_id, m.content) for m in merged] == [("a", "1"), ("b", "2 edited"), ("c", "3"), (None, "4")]


def test_remove_messages_in_pending_writes_remove_like_add_messages():
    remove = Message("remove", "", None, "b", None, None, None, {})
    remove_all = Message("remove", "", None, "__remove_all__", None, None, None, {})
    merged = merge_messages([msg("a"), msg("b"), msg("c")], [remove, msg("d")])
    assert [m.message_id for m in merged] == ["a", "c", "d"]
    assert [m.message_id for m in merge_messages(merged, [remove_all, msg("e"), msg("f")])] == ["e", "f"]


def test_a_remove_message_envelope_is_read_as_an_instruction():
    envelope = {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "RemoveMessage"],
                "kwargs": {"content": "", "type": "remove", "id": "h-1"}}
    assert (parse_message(envelope, 0).role, parse_message(envelope, 0).message_id) == ("remove", "h-1")


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_text_postgresql_cannot_store_is_refused(bad):
    state = State([msg("a", bad)], None, None, None)
    with pytest.raises(MalformedCheckpoint):
        check_storable(state, state.messages)


def test_a_literal_backslash_u0000_is_ordinary_text():
    state = State([msg("a", "type \\u0000 here")], None, None, {"k": ["\\u0000"]} and None)
    check_storable(state, state.messages)


def test_tag_values_are_escaped_for_redisearch():
    assert escape_tag("wa:346-00 1.2") == "wa\\:346\\-00\\ 1\\.2"
    assert escape_tag("café_明") == "café_明"


@pytest.mark.parametrize(
    "text, value",
    [
        ('{"n": 123456789012345678901234}', 123456789012345678901234),
        ('{"n": [1, -9223372036854775809]}', [1, -9223372036854775809]),  # 19 digits, below int64
        ('{"n":\n 18446744073709551616}', 18446744073709551616),  # 2**64
        ("123456789012345678901234", 123456789012345678901234),
        ('{"n": 18446744073709551615}', 18446744073709551615),  # 2**64 - 1: orjson's own range
    ],
)
def test_integers_past_64_bits_are_read_exactly(text, value):
    parsed = parse_json(text.encode(), "value")
    assert (parsed["n"] if isinstance(parsed, dict) else parsed) == value


@pytest.mark.parametrize(
    "text, long_integer",
    [
        ('{"channel_versions": {"messages": "00000000000000000000000000000013.0.5965"}}', False),
        ('{"thread_id": "wa:34612345678:17", "checkpoint_ts": 1795928661074.514}', False),
        ('{"content": "ref-12345678901234567890123"}', False),
        ('{"n": 1.12345678901234567890123}', False),
        ('{"n": -12345678901234567890}', True),
        ('{"content": "x: 12345678901234567890"}', True),  # looks like one: read exactly, only slower
    ],
)
def test_only_a_number_token_sends_a_document_to_the_exact_parser(text, long_integer):
    assert jsontext._may_hold_long_integer(text.encode()) is long_integer
