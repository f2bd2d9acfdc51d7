"""Pending writes: what a LangGraph task wrote that no checkpoint holds yet.

A `checkpoint_write:{thread}:{ns}:{checkpoint_id}:{task_id}:{idx}` document carries one write:
its `channel`, and the value as `type` + `blob`. How the blob is encoded depends on the saver
version that stored it, and one thread can hold both after an upgrade:

    type "json"      base64 of JSON text (0.2.0 and later), or the JSON text itself (0.1.x)
    type "null"      no value (0.2.0 and later; 0.1.x writes "json" with the text "null")
    type "msgpack"   base64 of LangGraph's msgpack (a value JSON cannot hold, e.g. bytes)
    anything else    opaque ("pickle", "bytes", ...): never decoded

Safety design: msgpack is read as data. LangGraph stores a message as extension type 5 whose
payload is [module, class name, fields, method]; the extension hook here only unpacks the
payload and keeps the fields. It never imports the module or calls anything it names, and
an encoding that could run code (pickle) is refused, so its write is quarantined unread.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import ormsgpack

from conversations.checkpoints.jsontext import may_hold_nul, parse_json
from conversations.checkpoints.messages import Message, parse_message, unapplied
from conversations.checkpoints.state import START_CHANNEL
from conversations.exceptions import MalformedCheckpoint

# LangGraph's msgpack extension codes whose payload is [module, class, fields, ...]: the
# pydantic models (v1, v2), which is how it stores a LangChain message.
MODEL_EXTENSIONS = (4, 5)


@dataclass
class Pending:
    """The pending writes of one checkpoint that matter to the archive, in write order."""

    messages: list[Message] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # state fields (customer id, summary ...)
    may_hold_nul: bool = False


def read_pending(write_docs: list[tuple[str, Any]], messages_field: str, wanted: set[str]) -> Pending:
    """Messages (`messages_field`) and the `wanted` state fields sitting in pending writes,
    in the order the saver itself hands them to LangGraph: by task path, task id, then the
    write's index. Raises MalformedCheckpoint for a write that cannot be read safely."""
    pending = Pending()
    docs = []
    for key, raw in write_docs:
        if raw is None or isinstance(raw, Exception):
            continue  # expired or removed since it was listed
        doc = parse_json(raw, f"pending write {key}")
        if not isinstance(doc, dict):
            raise MalformedCheckpoint(f"pending write {key} is not an object")
        docs.append((key, doc))
    docs.sort(key=lambda kd: (str(kd[1].get("task_path", "")), str(kd[1].get("task_id", "")), _index(kd[1])))
    for key, doc in docs:
        channel = doc.get("channel")
        if channel != messages_field and channel not in wanted:
            continue
        if START_CHANNEL in str(doc.get("task_path", "")).split(", "):
            continue  # the input step's writes repeat the input, which parse_state already read
        value, suspicious = decode_value(doc, key)
        pending.may_hold_nul = pending.may_hold_nul or suspicious
        if channel == messages_field:
            items = value if isinstance(value, list) else [] if value is None else [value]
            pending.messages.extend(unapplied(parse_message(item, i)) for i, item in enumerate(items))
        else:
            pending.fields[channel] = value
    return pending


def _index(doc: dict[str, Any]) -> int:
    idx = doc.get("idx")
    return idx if isinstance(idx, int) and not isinstance(idx, bool) else 0


def decode_value(doc: dict[str, Any], key: str) -> tuple[Any, bool]:
    """The value of a write document, and whether its JSON text may hold a NUL character."""
    kind, blob = doc.get("type"), doc.get("blob")
    if kind == "null":
        return None, False
    if kind not in ("json", "msgpack"):
        raise MalformedCheckpoint(
            f"pending write {key} to {doc.get('channel')!r} is encoded as {kind!r}; only JSON and msgpack are read"
        )
    if not isinstance(blob, str):
        raise MalformedCheckpoint(f"pending write {key} has no blob text")
    if kind == "msgpack":
        return unpack_msgpack(_base64(blob, key), key), False
    try:
        data = base64.b64decode(blob, validate=True)
        return parse_json(data, f"pending write {key}"), may_hold_nul(data)
    except (binascii.Error, ValueError, MalformedCheckpoint):
        # 0.1.x stores the JSON text itself (base64 of JSON is never JSON, and the other way
        # round "null" decodes to bytes that are not JSON).
        data = blob.encode("utf-8", "surrogatepass")
        return parse_json(data, f"pending write {key}"), may_hold_nul(data)


def _base64(blob: str, key: str) -> bytes:
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedCheckpoint(f"pending write {key} has a blob that is not base64") from None


def unpack_msgpack(data: bytes, what: str) -> Any:
    """LangGraph's msgpack as plain data: a model (a message) becomes its dict of fields,
    another extension {"__ext__": code, "value": payload}, bytes {"__bytes__": base64}."""
    try:
        return _plain(ormsgpack.unpackb(data, ext_hook=_extension, option=ormsgpack.OPT_NON_STR_KEYS))
    except (ValueError, TypeError, RecursionError) as exc:  # MsgpackDecodeError is a ValueError
        raise MalformedCheckpoint(f"{what} is not readable msgpack: {exc}") from None


def _extension(code: int, payload: bytes) -> Any:
    """Unpack an extension's payload and nothing else: the module and class it names are labels."""
    value = ormsgpack.unpackb(payload, ext_hook=_extension, option=ormsgpack.OPT_NON_STR_KEYS)
    if code in MODEL_EXTENSIONS and isinstance(value, (list, tuple)) and len(value) >= 3 and isinstance(value[2], dict):
        return value[2]
    return {"__ext__": code, "value": value}


def _plain(value: Any) -> Any:
    """Only what JSON can hold: bytes as base64, map keys as text, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    return value
