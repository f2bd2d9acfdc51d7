"""Checkpoint documents as langgraph-checkpoint-redis's RedisSaver stores them, for the
benchmarks and the reliability trials to seed Redis with, without running LangGraph."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def checkpoint(thread: str, cid: str, parent: str, ts: datetime, messages: list[dict[str, Any]], customer: str | None) -> dict[str, Any]:
    return {
        "thread_id": thread,
        "run_id": "",
        "checkpoint_ns": "__empty__",
        "checkpoint_id": cid,
        "parent_checkpoint_id": parent,
        "checkpoint_ts": ts.timestamp() * 1000,
        "checkpoint": {
            "type": "json", "v": 4, "ts": ts.isoformat(), "id": cid,
            "channel_values": {"messages": messages, "conversation_id": thread, "customer_id": customer},
            "channel_versions": {"messages": f"{len(messages):032d}.0.1"}, "versions_seen": {}, "updated_channels": ["messages"],
            "pending_sends": [],
        },
        "metadata": json.dumps({"source": "loop", "step": len(messages)}),
        "has_writes": "false",
        "source": "loop",
        "step": len(messages),
    }
