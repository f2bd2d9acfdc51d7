"""Where newly found messages go among the archived ones (storage.arrange): pure, no servers."""

from __future__ import annotations

from datetime import datetime, timezone

from conversations.storage import Archived, arrange

T = datetime(2026, 11, 28, tzinfo=timezone.utc)


def archive_of(*keys: str) -> Archived:
    known = Archived()
    for position, key in enumerate(keys):
        known.add(key, T, position)
    return known


def test_new_messages_after_every_archived_one_are_appended_and_nothing_moves():
    places, moved = arrange(archive_of("a", "b"), ["a", "b", "c", "d"], {"c", "d"})
    assert (places, moved) == ({"c": 2, "d": 3}, {})


def test_a_message_found_later_but_older_goes_after_the_one_before_it():
    places, moved = arrange(archive_of("a", "b", "d"), ["a", "b", "c", "d", "e"], {"c", "e"})
    assert places == {"c": 2, "e": 4}
    assert moved == {"d": 3}


def test_messages_older_than_every_archived_one_go_first():
    places, moved = arrange(archive_of("b", "c"), ["a", "b", "c"], {"a"})
    assert (places, moved) == ({"a": 0}, {"b": 1, "c": 2})


def test_archived_rows_the_history_no_longer_shows_keep_their_order():
    """Rows of messages whose checkpoints expired meanwhile stay where they were."""
    places, moved = arrange(archive_of("old1", "old2", "b"), ["b", "x", "c"], {"x", "c"})
    assert (places, moved) == ({"x": 3, "c": 4}, {})
    places, moved = arrange(archive_of("old1", "b", "d"), ["b", "x", "d"], {"x"})
    assert (places, moved) == ({"x": 2}, {"d": 3})


def test_a_thread_started_over_after_it_was_archived_comes_after_its_earlier_life():
    places, moved = arrange(archive_of("a", "b"), ["n1", "n2"], {"n1", "n2"})
    assert (places, moved) == ({"n1": 2, "n2": 3}, {})
