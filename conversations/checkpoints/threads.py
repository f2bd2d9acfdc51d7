"""A due thread of the langgraph-checkpoint-redis savers while indexed.py reads it: what the
first round found (its newest root checkpoint, that checkpoint's pending writes, and the list
of its other documents), and what the later rounds add to it (documents.py), until
assemble.py makes it a Conversation.

Thread ids may hold ':', so nothing here splits a key on it: namespaces and checkpoint ids come
from the documents' own fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conversations.checkpoints.base import Candidate, Guard, Held
from conversations.checkpoints.history import Snapshot
from conversations.checkpoints.jsontext import parse_json
from conversations.checkpoints.state import State
from conversations.checkpoints.writes import Pending
from conversations.exceptions import MalformedCheckpoint

EMPTY_NS = "__empty__"  # how langgraph-checkpoint-redis spells the root namespace in keys and fields


def root_ns(ns: str | None) -> str:
    """The namespace as the archive keeps it: "" for the root, which the savers spell
    `__empty__` (the async shallow saver "" in its fields)."""
    return "" if ns is None or ns in ("", EMPTY_NS) else ns


@dataclass
class Document:
    """A checkpoint document of the thread other than the newest root one, as the search
    listed it: its namespace and id, and the matches of its time and message paths."""

    key: str
    ns: str
    checkpoint_id: str
    found: dict[str, list[Any]]


@dataclass
class Thread:
    """One due thread while it is being read."""

    candidate: Candidate
    state: State
    checkpoint_id: str
    newest: Snapshot  # the newest root checkpoint
    write_keys: list[str]  # registered writes of the newest root checkpoint
    guard: Guard
    documents: list[Document]
    pending: dict[str, Pending]  # by namespace; the root's read with the newest checkpoint
    suspicious: bool  # some JSON read may hold a NUL
    # For the delete guard, read apart from the history: what the documents read here hold.
    held: Held
    read: set[str]  # the documents whose messages `held` counts
    listed: set[str]  # every document the search listed, and the newest
    scope: str  # keeps the thread's id-less messages apart from other threads' (message_keys)
    snapshots: list[Snapshot] = field(default_factory=list)  # the documents, read (documents.py)


def newest_document(raw: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The newest root checkpoint document as JSON.GET answered it: the document, its
    checkpoint object, and its checkpoint id."""
    if isinstance(raw, Exception):
        raise MalformedCheckpoint(f"the checkpoint is not a JSON document ({raw})")
    doc = parse_json(raw, "the checkpoint")
    if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), dict):
        raise MalformedCheckpoint("the document has no 'checkpoint' object")
    checkpoint = doc["checkpoint"]
    checkpoint_id = str(doc.get("checkpoint_id") or checkpoint.get("id") or "")
    if not checkpoint_id:
        raise MalformedCheckpoint("the checkpoint has no checkpoint_id")
    return doc, checkpoint, checkpoint_id


def metadata_of(value: Any) -> dict[str, Any]:
    """A checkpoint's metadata: an object, or JSON text of one (the full savers)."""
    if isinstance(value, str):
        try:
            value = parse_json(value, "the metadata")
        except MalformedCheckpoint:
            return {}
    return value if isinstance(value, dict) else {}


def newest_by_ns(snapshots: list[Snapshot]) -> dict[str, Snapshot]:
    """Each namespace's newest snapshot (checkpoint ids sort by time)."""
    newest: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        known = newest.get(snapshot.ns)
        if known is None or snapshot.checkpoint_id > known.checkpoint_id:
            newest[snapshot.ns] = snapshot
    return newest
