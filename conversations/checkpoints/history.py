"""The whole conversation: every message that any surviving checkpoint of a thread holds,
once, in order of first appearance (what LangGraph's own get_state_history shows).

LangGraph keeps a conversation as a chain of checkpoints per namespace: the root, and one per
subgraph task. A bot that summarizes, trims or removes messages leaves them only in its older
checkpoints; an interrupted subgraph keeps its messages in its own namespace. The layouts read
only the message ids of those checkpoints (cheap, server-side), this module decides where each
message belongs, and the layouts then fetch the few message bodies the newest state lacks.

The rules (README and docs/operations.md say them too):
- Order: the checkpoints of every namespace, by time (then id); right after the newest
  checkpoint of a namespace comes its live state, that checkpoint with its pending writes
  applied. A message takes its place where it first appears: in the earliest checkpoint that
  holds it, at its position there. A subgraph's own messages therefore sit between the root
  messages written before and after them.
- Time: the time of that checkpoint (the layout lets a message's own timestamp win).
- Content: from the newest checkpoint, or live state, that holds it: an edit in place keeps
  its newest text.
- Namespace: "" if the message is ever in the root namespace, else the subgraph's.
- Removed: a message that its namespace's live state no longer holds (trimmed, summarized,
  RemoveMessage) is marked with the time of the first checkpoint of that namespace without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from conversations.checkpoints.messages import Message, merge_messages, message_keys


@dataclass(frozen=True)
class Snapshot:
    """What one checkpoint document says about the conversation's messages."""

    key: str  # the Redis key of the document
    ns: str  # "" for the root namespace
    checkpoint_id: str
    time: datetime
    keys: tuple[str, ...]  # the identity of each of its messages, in order (messages.message_keys)


@dataclass(frozen=True)
class Ref:
    """A message of a snapshot whose body has not been read (only its id)."""

    snapshot: Snapshot
    position: int
    message_id: str | None
    role: str = ""  # never a RemoveMessage: merge_messages treats it as a message

    @property
    def key(self) -> str:
        return self.snapshot.keys[self.position]


Item = Message | Ref


@dataclass
class Live:
    """A namespace's current state: its newest checkpoint with the pending writes applied."""

    newest: Snapshot
    items: list[Item]
    keys: list[str]

    @classmethod
    def of(cls, newest: Snapshot, current: list[Item], pending: list[Message], scope: str) -> Live:
        """`current`: the newest checkpoint's messages (bodies or refs); `pending`: the writes."""
        items = merge_messages(current, pending)  # type: ignore[arg-type]
        return cls(newest, items, live_keys(items, scope))


def live_keys(items: list[Item], scope: str) -> list[str]:
    """Each item's identity: a ref's is its snapshot's; a message's is computed as for a state
    (message_keys), over the messages of the list only."""
    messages = [i for i in items if isinstance(i, Message)]
    computed = iter(message_keys(messages, scope))
    return [i.key if isinstance(i, Ref) else next(computed) for i in items]


@dataclass
class Planned:
    """One message of the archived conversation, before its body is read."""

    key: str
    source: Item  # where its newest content is
    first: Snapshot  # where it first appeared
    ns: str  # its home namespace
    removed_at: datetime | None = None


@dataclass
class Entry:
    """One message of the archived conversation: its identity, when and where it first
    appeared, and when the bot removed it from its state (None while the bot has it)."""

    key: str
    message: Message
    time: datetime
    ns: str
    checkpoint_id: str
    removed_at: datetime | None = None


@dataclass
class _Seen:
    first: Snapshot
    order: tuple[int, int]
    source: Item
    namespaces: set[str] = field(default_factory=set)


def plan(snapshots: Iterable[Snapshot], lives: dict[str, Live]) -> list[Planned]:
    """The union of every snapshot and live state, in order of first appearance (see the module)."""
    steps: list[tuple[tuple[datetime, str, int], Snapshot, list[Item], list[str]]] = []
    for snapshot in snapshots:
        refs: list[Item] = [Ref(snapshot, i, _id_of(k)) for i, k in enumerate(snapshot.keys)]
        steps.append(((snapshot.time, snapshot.checkpoint_id, 0), snapshot, refs, list(snapshot.keys)))
    for live in lives.values():
        steps.append(((live.newest.time, live.newest.checkpoint_id, 1), live.newest, live.items, live.keys))
    steps.sort(key=lambda step: step[0])

    seen: dict[str, _Seen] = {}
    appearances: dict[str, dict[str, int]] = {}  # key -> ns -> index of its last step there
    for index, (_, snapshot, items, keys) in enumerate(steps):
        for position, (item, key) in enumerate(zip(items, keys)):
            known = seen.get(key)
            if known is None:
                seen[key] = known = _Seen(snapshot, (index, position), item)
            known.source = item
            known.namespaces.add(snapshot.ns)
            appearances.setdefault(key, {})[snapshot.ns] = index

    current = {ns: set(live.keys) for ns, live in lives.items()}
    planned = []
    for key, known in sorted(seen.items(), key=lambda kv: kv[1].order):
        home = "" if "" in known.namespaces else known.first.ns
        removed_at = None
        live = lives.get(home)
        if live is not None and key not in current[home]:
            last = appearances[key].get(home, -1)
            later = (s for _, s, _, _ in steps[last + 1 :] if s.ns == home)
            removed_at = next(later, live.newest).time
        planned.append(Planned(key, known.source, known.first, home, removed_at))
    return planned


def _id_of(key: str) -> str | None:
    return key[3:] if key.startswith("id:") else None


def entries(planned: list[Planned], bodies: dict[tuple[str, int], Message]) -> list[Entry]:
    """The planned messages with their bodies (`bodies` by (snapshot key, position) for the
    refs); times from their first checkpoint, a message's own timestamp winning, and never
    going backwards."""
    result = []
    for p in planned:
        message = p.source if isinstance(p.source, Message) else bodies[(p.source.snapshot.key, p.source.position)]
        result.append(Entry(p.key, message, p.first.time, p.ns, p.first.checkpoint_id, p.removed_at))
    for entry in result:
        if entry.message.own_timestamp is not None:
            entry.time = entry.message.own_timestamp
    for before, entry in zip(result, result[1:]):
        if entry.time < before.time:
            entry.time = before.time
    return result


def refs_to_read(planned: list[Planned]) -> dict[str, list[int]]:
    """The positions whose bodies must be read, by snapshot key."""
    wanted: dict[str, list[int]] = {}
    for p in planned:
        if isinstance(p.source, Ref):
            wanted.setdefault(p.source.snapshot.key, []).append(p.source.position)
    return wanted
