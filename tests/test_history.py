"""The whole conversation from a thread's checkpoints (history.py): pure functions, no servers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from conversations.checkpoints import history
from conversations.checkpoints.history import Live, Ref, Snapshot
from conversations.checkpoints.messages import Message, unapplied

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
SCOPE = "redis:t"


def msg(id: str | None, content: str = "", own: datetime | None = None) -> Message:
    return Message("ai", content or f"text of {id}", None, id, None, None, None, {}, own)


def snap(minute: int, *ids: str, ns: str = "") -> Snapshot:
    return Snapshot(f"checkpoint:{ns or 'root'}:{minute}", ns, f"1f0-{minute:04d}", T0 + timedelta(minutes=minute), tuple(f"id:{i}" for i in ids))


def archive(snapshots: list[Snapshot], lives: dict[str, Live], bodies: dict | None = None) -> list[history.Entry]:
    planned = history.plan(snapshots, lives)
    wanted = history.refs_to_read(planned)
    found = dict(bodies or {})
    for key, positions in wanted.items():
        snapshot = next(s for s in snapshots if s.key == key)
        for p in positions:
            found.setdefault((key, p), msg(snapshot.keys[p][3:], f"{snapshot.keys[p][3:]} as in {key}"))
    return history.entries(planned, found)


def live(newest: Snapshot, messages: list[Message], pending: list[Message] = ()) -> Live:
    return Live.of(newest, messages, list(pending), SCOPE)


def test_messages_a_summarizing_bot_removed_are_kept_in_order_and_marked():
    s1, s2, s3 = snap(0, "h1", "a1"), snap(1, "h1", "a1", "h2", "a2"), snap(2, "a2", "s", "h3")
    result = archive([s1, s2, s3], {"": live(s3, [msg("a2"), msg("s"), msg("h3")])})

    assert [e.key for e in result] == ["id:h1", "id:a1", "id:h2", "id:a2", "id:s", "id:h3"]
    assert [e.time for e in result] == [T0, T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), T0 + timedelta(minutes=2)]
    removed = {e.key: e.removed_at for e in result}
    assert removed["id:h1"] == removed["id:a1"] == removed["id:h2"] == T0 + timedelta(minutes=2)
    assert removed["id:a2"] is removed["id:s"] is removed["id:h3"] is None
    assert result[0].message.content == "h1 as in checkpoint:root:1"  # the newest checkpoint that held it


def test_a_subgraphs_own_messages_sit_between_the_root_messages_around_them():
    r1 = snap(0, "h1")
    sub = snap(1, "h1", "tool-call", ns="agent:task-1")
    r2 = snap(2, "h1", "a2")
    result = archive([r1, sub, r2], {"": live(r2, [msg("h1"), msg("a2")]),
                                     "agent:task-1": live(sub, [Ref(sub, 0, "h1"), Ref(sub, 1, "tool-call")], [unapplied(msg(None, "tool result"))])})

    keys = [e.key for e in result]
    assert keys[:2] == ["id:h1", "id:tool-call"] and keys[-1] == "id:a2"
    assert [e.ns for e in result] == ["", "agent:task-1", "agent:task-1", ""]
    assert result[2].message.content == "tool result" and result[2].key.startswith("input:")  # a pending write without id
    assert all(e.removed_at is None for e in result)  # the interrupted subgraph still has its messages


def test_an_edit_in_place_keeps_the_newest_content_and_the_first_time():
    s1 = snap(0, "a")
    s2 = snap(5, "a", "b")
    result = archive([s1, s2], {"": live(s2, [msg("a", "edited"), msg("b")])})
    assert (result[0].message.content, result[0].time) == ("edited", T0)


def test_a_message_removed_by_a_pending_write_is_marked_with_the_newest_checkpoints_time():
    newest = snap(3, "a", "b")
    remove = Message("remove", "", None, "a", None, None, None, {})
    result = archive([newest], {"": live(newest, [msg("a"), msg("b")], [remove, msg("c")])})
    assert [(e.key, e.removed_at) for e in result] == [("id:a", newest.time), ("id:b", None), ("id:c", None)]


def test_own_timestamps_win_and_times_never_go_backwards():
    newest = snap(10, "a", "b", "c")
    result = archive([newest], {"": live(newest, [msg("a"), msg("b", own=T0 - timedelta(days=1)), msg("c", own=T0 + timedelta(minutes=11))])})
    assert [e.time for e in result] == [newest.time, newest.time, T0 + timedelta(minutes=11)]


def test_the_same_message_in_a_subgraph_and_the_root_belongs_to_the_root():
    sub = snap(0, "x", ns="agent:1")
    root = snap(1, "x")
    result = archive([sub, root], {"": live(root, [msg("x")]), "agent:1": live(sub, [Ref(sub, 0, "x")])})
    assert [(e.key, e.ns, e.time, e.removed_at) for e in result] == [("id:x", "", sub.time, None)]


def test_a_users_message_read_both_before_and_after_langgraph_gave_it_an_id_is_one_message():
    """The probe saw the run's input checkpoint (the message still without an id); the search
    then also listed the checkpoint written next, where it has its id (found by the reliability
    suite's writer, with the live mirror reading threads in the middle of a turn)."""
    newest, after = snap(0, "a1"), snap(1, "a1", "h1", "a2")
    pending = unapplied(Message("human", "hola 🙏", None, None, None, None, None, {}))
    body = Message("human", "hola 🙏", None, "h1", None, None, None, {})

    result = archive([after], {"": live(newest, [msg("a1")], [pending])}, {(after.key, 1): body})

    assert [e.key for e in result] == ["id:a1", "id:h1", "id:a2"] and result[1].message.content == "hola 🙏"
    assert len(result) == 3 and not any(e.message.provisional for e in result)
