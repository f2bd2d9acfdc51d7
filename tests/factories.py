"""Hand-made checkpoint values for edge cases (the real savers' output is in harness/lgwriter.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from django.utils import timezone as dj_timezone

CLASSES = {"human": "HumanMessage", "ai": "AIMessage", "tool": "ToolMessage", "system": "SystemMessage"}


def lc(role: str, content: Any, id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    fields = {"content": content, "type": role, **kwargs}
    if id is not None:
        fields["id"] = id
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", CLASSES[role]], "kwargs": fields}


def simple(role: str, content: str, timestamp: str | None = None) -> dict[str, Any]:
    message = {"role": role, "content": content}
    if timestamp is not None:
        message["timestamp"] = timestamp
    return message


def plain_value(
    messages: list[dict[str, Any]],
    *,
    ts: datetime,
    conversation_id: str | None = None,
    customer_id: str | None = None,
    summary: str | None = None,
    checkpoint_id: str = "1f1ebb25-0000",
) -> str:
    values: dict[str, Any] = {"messages": messages}
    if conversation_id is not None:
        values["conversation_id"] = conversation_id
    if customer_id is not None:
        values["customer_id"] = customer_id
    if summary is not None:
        values["conversation_summary"] = summary
    return json.dumps(
        {"v": 4, "ts": ts.astimezone(timezone.utc).isoformat(), "id": checkpoint_id, "channel_values": values},
        ensure_ascii=False,
    )


def hours_ago(hours: float) -> datetime:
    return dj_timezone.now() - timedelta(hours=hours)
