"""Everything that knows how LangGraph lays out conversations in Redis."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from conversations import conf
from conversations.checkpoints.base import Candidate, Conversation, Layout, Unreadable
from conversations.checkpoints.plain import PlainLayout
from conversations.checkpoints.saver import SaverLayout
from conversations.checkpoints.shallow import ShallowLayout

LAYOUTS: dict[str, type[Layout]] = {"redis": SaverLayout, "shallow": ShallowLayout, "plain": PlainLayout}


def enabled_layouts() -> list[Layout]:
    names = conf.layouts()
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise ImproperlyConfigured(
            f"ARCHIVER['LAYOUTS'] names {', '.join(map(repr, unknown))}; the known layouts are {', '.join(LAYOUTS)}."
        )
    return [LAYOUTS[name]() for name in names]


__all__ = ["Unreadable", "Candidate", "Conversation", "Layout", "enabled_layouts"]
