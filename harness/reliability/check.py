"""What a trial checks: the archive against what was seeded, what is still in Redis, what the
archiver's own log and health file say.

A message may be in both stores after a disturbance, never in neither (compare with
`in_redis`); after one clean run it is archived exactly once, in the seeded order, and
nothing of it is left in Redis.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import redis

from harness.reliability.seed import Backlog, Msg

if TYPE_CHECKING:
    from harness.reliability.processes import Run, Target


@dataclass
class Tally:
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0  # rows matching no seeded message (changed content, foreign conversation)
    misordered: int = 0  # conversations whose archived order differs from the seeded order
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.messages += other.messages
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.unexpected += other.unexpected
        self.misordered += other.misordered
        self.examples = (self.examples + other.examples)[:10]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.misordered)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "lost": self.lost, "duplicated": self.duplicated,
                "unexpected": self.unexpected, "misordered": self.misordered, "examples": self.examples}


def archived_rows(db_url: str) -> dict[str, list[Msg]]:
    rows: dict[str, list[Msg]] = {}
    with psycopg.connect(db_url) as conn:
        cursor = conn.execute(
            "SELECT conversation_id, message_id, role, content, content_blocks FROM conversation_history "
            "ORDER BY conversation_id, position"
        )
        for conversation_id, message_id, role, content, blocks in cursor:
            rows.setdefault(conversation_id, []).append(Msg(message_id, role, blocks if blocks is not None else content))
    return rows


def compare(backlog: Backlog, rows: dict[str, list[Msg]], in_redis: set[str] | None = None) -> Tally:
    """The archive against the seeded messages. With `in_redis` (conversations still in Redis)
    a conversation may be partly or not at all archived: only what is gone from Redis must be
    in the archive (the check right after a crash); without it, everything must be."""
    tally = Tally(messages=backlog.message_count)
    for conversation_id, seeded in backlog.conversations.items():
        got = rows.get(conversation_id, [])
        want = Counter(m.identity() for m in seeded.messages)
        have = Counter(m.identity() for m in got)
        missing = sum((want - have).values())
        extra_known = sum(have[k] - want[k] for k in have if k in want and have[k] > want[k])
        foreign = sum(n for k, n in have.items() if k not in want)
        changed = sum(1 for m in got if m.id and ("id:" + m.id) in want and m not in seeded.messages)
        still_there = in_redis is not None and conversation_id in in_redis
        if missing and not still_there:
            tally.lost += missing
            tally.examples.append(f"{conversation_id}: {missing} of {len(seeded.messages)} messages in neither store")
        tally.duplicated += extra_known
        tally.unexpected += foreign + changed
        if (extra_known or foreign or changed) and len(tally.examples) < 10:
            odd = [k[:120] for k in have if k not in want or have[k] > want[k]]
            tally.examples.append(f"{conversation_id}: {extra_known} duplicated, {foreign + changed} unexpected rows: {odd[:3]}")
        if not missing and not extra_known and [i for i in (m.identity() for m in got) if i in want] != [m.identity() for m in seeded.messages]:
            tally.misordered += 1
            tally.examples.append(f"{conversation_id}: archived in another order")
    for conversation_id, got in rows.items():
        if conversation_id not in backlog.conversations:
            tally.unexpected += len(got)
            tally.examples.append(f"{conversation_id}: {len(got)} rows of a conversation never seeded")
    tally.examples = tally.examples[:10]
    return tally


def still_in_redis(client: redis.Redis, backlog: Backlog) -> set[str]:
    """Conversations whose current state is still readable in Redis: the presence key exists,
    and for a pointer, the checkpoint it names exists too."""
    items = list(backlog.conversations.values())
    pipe = client.pipeline(transaction=False)
    for seeded in items:
        if seeded.presence.startswith("checkpoint_latest:"):
            pipe.get(seeded.presence)
        else:
            pipe.exists(seeded.presence)
    first = pipe.execute()
    pipe = client.pipeline(transaction=False)
    pointed = []
    for seeded, reply in zip(items, first):
        if seeded.presence.startswith("checkpoint_latest:") and reply:
            pipe.exists(reply)
            pointed.append(seeded.conversation_id)
    present = {cid for cid, ok in zip(pointed, pipe.execute()) if ok}
    present |= {s.conversation_id for s, reply in zip(items, first) if not s.presence.startswith("checkpoint_latest:") and reply}
    return present


def leftover_keys(client: redis.Redis, backlog: Backlog) -> list[str]:
    """Keys still in Redis after a clean run, other than the hostile values kept on purpose."""
    left = []
    for raw in client.scan_iter(count=1000):
        key = raw.decode("utf-8", "backslashreplace")
        if key not in backlog.hostile_keys:
            left.append(key)
    return sorted(left)


def count_rows(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT COUNT(*) FROM conversation_history").fetchone()[0]


def runs_left_running(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT COUNT(*) FROM archive_run WHERE status = 'running'").fetchone()[0]


def health(target: Target) -> dict[str, Any] | None:
    try:
        return json.loads(target.health_file.read_text())
    except FileNotFoundError:
        return None


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


LOG_THREAD = re.compile(r" \[([^\]]+)\] ")


def retry_gaps(stderr: str) -> tuple[int, int, list[float]]:
    """From the archiver's log: first-attempt warnings, warnings of any later attempt, and the
    seconds between each first-attempt warning and the same writer thread's next line (the
    pause before attempt 2)."""
    by_thread: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        thread = LOG_THREAD.search(line)
        if LOG_TIME.match(line) and thread and thread.group(1).startswith("archive-writer"):
            by_thread.setdefault(thread.group(1), []).append(line)
    first = later = 0
    gaps = []
    for lines in by_thread.values():
        for i, line in enumerate(lines):
            if "Database error while" not in line:
                continue
            if "(attempt 1 of 2)" in line:
                first += 1
                if i + 1 < len(lines):
                    gaps.append(round(_log_time(lines[i + 1]) - _log_time(line), 3))
            else:
                later += 1
    return first, later, gaps


def _log_time(line: str) -> float:
    match = LOG_TIME.match(line)
    assert match is not None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


BATCH_LINE = re.compile(r" Batch of (\d+) keys \([^)]*\): .* in (-?[\d.]+)s$", re.MULTILINE)


def seconds_per_key(run: Run) -> float:
    """What a batch took per key, from the run's own log lines. (The difference between a full
    run and an empty one, measured on a busy machine, can come out negative.)"""
    batches = [(int(keys), max(0.0, float(seconds))) for keys, seconds in BATCH_LINE.findall(run.stderr)]
    keys = sum(k for k, _ in batches)
    return sum(s for _, s in batches) / keys if keys else 0.0
