"""Round 4 of reading the savers' due threads (indexed.py): each thread's history planned
(history.py), the bodies of the messages the newest root state no longer holds read by
position, and the thread made a Conversation.

Safety design: a document that changed or expired while it was read, or a conversation that
PostgreSQL could not store, is quarantined and left out; nothing is archived from it.
"""

from __future__ import annotations

import redis

from conversations.checkpoints import history
from conversations.checkpoints.base import Conversation, Unreadable, broken_with_value
from conversations.checkpoints.history import Live, Planned, Ref, id_of
from conversations.checkpoints.jsontext import may_hold_nul
from conversations.checkpoints.messages import Message, parse_message
from conversations.checkpoints.redisjson import json_paths, runs
from conversations.checkpoints.state import check_storable
from conversations.checkpoints.threads import Thread, newest_by_ns
from conversations.checkpoints.writes import Pending
from conversations.exceptions import MalformedCheckpoint

Bodies = dict[tuple[str, int], Message]  # by (document key, position)


def assemble(client: redis.Redis, threads: list[Thread], broken: list[Unreadable], name: str, messages_path: str) -> list[Conversation]:
    """Plan each thread's history, read the bodies it needs (round 4), and build it."""
    plans = [_plan(thread) for thread in threads]
    bodies, failed = _read_bodies(client, threads, plans, broken, name, messages_path)
    conversations = []
    for n, (thread, planned) in enumerate(zip(threads, plans)):
        if n in failed:
            continue
        try:
            entries = history.entries(planned, bodies[n])
            if thread.suspicious:
                check_storable(thread.state, [e.message for e in entries])
        except (MalformedCheckpoint, ValueError) as exc:
            broken.append(broken_with_value(client, thread.candidate.checkpoint_key, str(exc), name))
            continue
        conversations.append(
            Conversation(
                candidate=thread.candidate,
                source=name,
                checkpoint_id=thread.checkpoint_id,
                state=thread.state,
                entries=entries,
                guard=thread.guard,
                scope=thread.scope,
                held=thread.held,
                read=frozenset(thread.read),
                found=frozenset(thread.listed),
            )
        )
    return conversations


def _plan(thread: Thread) -> list[Planned]:
    """The thread's history: its snapshots, and the live state of each namespace (the newest
    checkpoint with its pending writes applied)."""
    lives = {"": Live.of(thread.newest, thread.state.current(), thread.pending[""].messages, thread.scope)}
    for ns, newest in newest_by_ns(thread.snapshots).items():
        if ns:
            refs: list[history.Item] = [Ref(newest, i, id_of(k)) for i, k in enumerate(newest.keys)]
            lives[ns] = Live.of(newest, refs, thread.pending.get(ns, Pending()).messages, thread.scope)
    return history.plan([thread.newest, *thread.snapshots], lives)


def _read_bodies(
    client: redis.Redis, threads: list[Thread], plans: list[list[Planned]], broken: list[Unreadable], name: str, messages_path: str
) -> tuple[list[Bodies], set[int]]:
    """The bodies each plan needs, one JSON.GET of runs of positions a document; and the
    threads (by index) of which one could not be read."""

    def sliced(start: int, end: int) -> str:
        return f"{messages_path}[{start}:{end}]"

    pipe = client.pipeline(transaction=False)
    asked: list[tuple[int, str, list[tuple[int, int]]]] = []
    for n, positions in enumerate(history.refs_to_read(p) for p in plans):
        for key, indexes in positions.items():
            found = runs(sorted(set(indexes)))
            pipe.execute_command("JSON.GET", key, *(sliced(a, b) for a, b in found))
            asked.append((n, key, found))
    bodies: list[Bodies] = [{} for _ in threads]
    failed: set[int] = set()
    for (n, key, found), raw in zip(asked, pipe.execute(raise_on_error=False)):
        try:
            if raw is None or isinstance(raw, Exception):
                raise MalformedCheckpoint(f"the checkpoint {key} expired or changed while it was read")
            paths = json_paths(raw, [sliced(a, b) for a, b in found]) or {}
            for a, b in found:
                items = paths.get(sliced(a, b)) or []
                if len(items) != b - a:
                    raise MalformedCheckpoint(f"the checkpoint {key} changed while it was read")
                for offset, item in enumerate(items):
                    bodies[n][(key, a + offset)] = parse_message(item, a + offset)
            threads[n].suspicious = threads[n].suspicious or may_hold_nul(raw)
        except (MalformedCheckpoint, ValueError) as exc:
            broken.append(broken_with_value(client, key, str(exc), name))
            failed.add(n)
    return bodies, failed
