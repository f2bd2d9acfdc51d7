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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from conversations.checkpoints.messages import Message
from conversations.checkpoints.state import merge_messages, message_keys


@dataclass(frozen=True)
class Snapshot:
    """What one checkpoint document says about the conversation's messages."""

    key: str  # the Redis key of the document
    ns: str  # "" for the root namespace
    checkpoint_id: str
    time: datetime
    keys: tuple[str, ...]  # the identity of each of its messages, in order (state.message_keys)


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
    def of(cls, newest: Snapshot, current: Sequence[Item], pending: list[Message], scope: str) -> Live:
        """`current`: the newest checkpoint's messages (bodies or refs); `pending`: the writes."""
        items = merge_messages(current, pending)
        return cls(newest, items, live_keys(items, scope))


def live_keys(items: Sequence[Item], scope: str) -> list[str]:
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
    namespaces: set[str]


@dataclass
class _Step:
    snapshot: Snapshot
    keys: tuple[str, ...]
    live: Live | None
    where: dict[str, int] | None = None  # key -> position, built when a body is wanted from here

    def item(self, key: str) -> Item:
        if self.where is None:
            self.where = {k: i for i, k in enumerate(self.keys)}
        position = self.where[key]
        return self.live.items[position] if self.live else Ref(self.snapshot, position, id_of(key))


def plan(snapshots: Iterable[Snapshot], lives: dict[str, Live]) -> list[Planned]:
    """The union of every snapshot and live state, in order of first appearance (see the module).

    Linear in the messages, not in messages x checkpoints: most checkpoints extend the one
    before them in their namespace (the same messages, and more at the end), and then only
    their new tail is looked at. A message's last appearance in a namespace is recorded when a
    later checkpoint of that namespace no longer holds it."""
    ordered = sorted(
        [((s.time, s.checkpoint_id, 0), _Step(s, tuple(s.keys), None)) for s in snapshots]
        + [((live.newest.time, live.newest.checkpoint_id, 1), _Step(live.newest, tuple(live.keys), live)) for live in lives.values()],
        key=lambda pair: pair[0],
    )
    steps = [step for _, step in ordered]
    seen: dict[str, _Seen] = {}
    gone: dict[tuple[str, str], int] = {}  # (key, ns) -> the first step of ns without it, after it was there
    previous: dict[str, tuple[str, ...]] = {}
    in_ns: dict[str, list[int]] = {}  # ns -> its steps, in order
    for index, step in enumerate(steps):
        ns, keys = step.snapshot.ns, step.keys
        before = previous.get(ns, ())
        if keys[: len(before)] == before:
            fresh = range(len(before), len(keys))  # the same messages, and maybe more at the end
        else:
            fresh = range(len(keys))
            present = set(keys)
            for key in before:
                if key not in present:
                    gone[(key, ns)] = index
        for position in fresh:
            key = keys[position]
            known = seen.get(key)
            if known is None:
                seen[key] = _Seen(step.snapshot, {ns})
            else:
                known.namespaces.add(ns)
                gone.pop((key, ns), None)  # back again
        previous[ns] = keys
        in_ns.setdefault(ns, []).append(index)

    def last_step(key: str, ns: str) -> int:
        """The last step of `ns` that holds `key`."""
        dropped = gone.get((key, ns))
        if dropped is None:
            return in_ns[ns][-1]
        indexes = in_ns[ns]
        return indexes[indexes.index(dropped) - 1]

    planned = []
    for key, known in seen.items():  # filled in order of first appearance
        if len(known.namespaces) == 1:
            (home,) = known.namespaces
            newest = last_step(key, home)
        else:
            home = "" if "" in known.namespaces else known.first.ns
            newest = max(last_step(key, ns) for ns in known.namespaces)
        dropped = gone.get((key, home))
        removed_at = steps[dropped].snapshot.time if dropped is not None else None
        planned.append(Planned(key, steps[newest].item(key), known.first, home, removed_at))
    return planned


def id_of(key: str) -> str | None:
    """The message id within a message identity (message_keys), if it has one."""
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
    return applied(result)


def applied(result: list[Entry]) -> list[Entry]:
    """Without the provisional messages that the next message repeats with an id. A read that
    meets a thread in the middle of a turn takes the newest root state from the probe (a run's
    input checkpoint, the user's message still without an id) and the history from the search,
    which may list the checkpoint LangGraph wrote next, where the message has its id: it is one
    message, applied, and the provisional copy would stay in the archive as a second row."""
    kept = []
    for entry, after in zip(result, [*result[1:], None]):
        message = entry.message
        if (
            message.provisional and after is not None and after.message.message_id
            and (after.message.role, after.message.content) == (message.role, message.content)
        ):
            continue
        kept.append(entry)
    return kept


def single(snapshot: Snapshot, messages: list[Message], keys: list[str], ns: str) -> list[Entry]:
    """The history of a layout that keeps one snapshot (the plain strings): its messages as they
    are, with its time."""
    planned = [Planned(key, message, snapshot, ns) for key, message in zip(keys, messages)]
    return entries(planned, {})


def refs_to_read(planned: list[Planned]) -> dict[str, list[int]]:
    """The positions whose bodies must be read, by snapshot key."""
    wanted: dict[str, list[int]] = {}
    for p in planned:
        if isinstance(p.source, Ref):
            wanted.setdefault(p.source.snapshot.key, []).append(p.source.position)
    return wanted
