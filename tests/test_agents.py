"""Real agents, every saver class, three saver versions: the archive holds the whole
conversation, as LangGraph's own get_state_history shows it.

harness/agents.py writes the conversations (the prebuilt ReAct agent with a scripted chat
model and real tools; a summarizing bot; trims; RemoveMessage; an edit in place; interrupts,
pending and resumed; an interrupted subgraph; the customer id only in `configurable`) with
the real langgraph + langgraph-checkpoint-redis of one version, in that version's own
virtualenv (scripts/saver-venv.sh; 0.5.x is this project's own), and writes down what
LangGraph says the archive must hold: the ordered union over every checkpoint of every
namespace, each message's newest content, where and when it first appeared, and whether the
bot still has it. One archive run later, every message must be there exactly like that, and
nothing of the threads left in Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.utils import timezone

from conversations.archiving import run_archive
from conversations.models import ArchivedConversation, ConversationHistory
from conversations.options import Options

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stack]

ROOT = Path(__file__).resolve().parent.parent
# The versions users run, oldest first; "0.5" is the one requirements-dev.txt installs here.
VERSIONS = ("0.1.3", "0.2.1", "0.5")
SAVERS = ("redis", "async", "shallow", "async_shallow")


@pytest.fixture(scope="session")
def saver_python() -> Any:
    """The interpreter of each saver version's own virtualenv, made once (scripts/saver-venv.sh)."""
    made: dict[str, str] = {}

    def python(version: str) -> str:
        if version == "0.5":
            return sys.executable
        if version not in made:
            result = subprocess.run([str(ROOT / "scripts" / "saver-venv.sh"), version], capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                pytest.fail(f"cannot make the virtualenv of langgraph-checkpoint-redis {version}:\n{result.stderr[-3000:]}")
            made[version] = result.stdout.strip().splitlines()[-1]
        return made[version]

    return python


def empty(client: redis.Redis) -> None:
    """No keys and no search index: each version's saver creates its own (their names differ)."""
    for name in client.execute_command("FT._LIST"):
        client.execute_command("FT.DROPINDEX", name)
    client.flushdb()


@pytest.fixture
def stack(stack_redis: redis.Redis) -> Any:
    empty(stack_redis)
    yield stack_redis
    empty(stack_redis)


def stack_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def write(python: str, url: str, saver: str, prefix: str, out: Path, *scenarios: str) -> dict[str, Any]:
    command = [python, str(ROOT / "harness" / "agents.py"), "--redis-url", url, "--saver", saver, "--prefix", prefix, "--out", str(out)]
    if scenarios:
        command += ["--scenarios", ",".join(scenarios)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(out.read_text())


def archived(conversation_id: str) -> list[ConversationHistory]:
    return list(ConversationHistory.objects.filter(conversation_id=conversation_id).order_by("position"))


def as_expected(row: ConversationHistory) -> dict[str, Any]:
    """A row in the shape of harness/agents.py's messages."""
    return {
        "id": row.message_id,
        "type": row.role,
        "content": row.content_blocks if row.content_blocks is not None else row.content,
        "name": row.name,
        "tool_calls": [{k: c[k] for k in ("name", "args", "id", "type") if k in c} for c in row.tool_calls or []],
        "tool_call_id": row.tool_call_id,
        "first_ts": row.timestamp,
        "checkpoint_ns": row.checkpoint_ns,
        "in_state": row.removed_at is None,
    }


def expected_rows(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for m in messages:
        rows.append({
            "id": m["id"] if m["stable_id"] else None,
            "type": m["type"],
            "content": m["content"],
            "name": m["name"],
            "tool_calls": [{k: c[k] for k in ("name", "args", "id", "type") if k in c} for c in m["tool_calls"]],
            "tool_call_id": m["tool_call_id"],
            "first_ts": datetime.fromisoformat(m["first_ts"]),
            "checkpoint_ns": m["checkpoint_ns"],
            "in_state": m["in_state"],
        })
    return rows


def leftovers(client: redis.Redis, thread: str) -> list[bytes]:
    return [k for k in client.scan_iter(count=1000) if thread.encode() in k]


@pytest.mark.parametrize("saver", SAVERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_message_real_agents_ever_had_is_archived_once(stack, saver_python, tmp_path, version, saver):
    url = stack_url(stack)
    expected = write(saver_python(version), url, saver, f"v{version}-{saver}", tmp_path / "expected.json")

    report = run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    assert report.errors == 0, report.error_messages
    assert report.archived == len(expected["threads"])
    for thread, facts in expected["threads"].items():
        conversation_id = facts["conversation_id"] or thread
        rows = archived(conversation_id)
        assert [as_expected(r) for r in rows] == expected_rows(facts["messages"]), (facts["scenario"], thread)
        assert [r.position for r in rows] == list(range(len(rows)))
        customer = facts["customer_id"] or facts.get("metadata_customer_id")
        assert {r.customer_id for r in rows} == {customer}, facts["scenario"]
        record = ArchivedConversation.objects.get(conversation_id=conversation_id)
        assert (record.customer_id, record.summary, record.message_count) == (customer, facts["summary"], len(rows))
        assert leftovers(stack, thread) == [], facts["scenario"]


@pytest.mark.parametrize("saver", ["redis", "shallow"])
def test_what_a_summarizing_bot_removed_is_kept_and_marked(stack, saver_python, tmp_path, saver):
    """The issue's own case: 14 messages, of which the newest state keeps 2 (and a summary)."""
    expected = write(saver_python("0.5"), stack_url(stack), saver, f"sum-{saver}", tmp_path / "e.json", "summarize")
    [(thread, facts)] = expected["threads"].items()

    run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    rows = archived(facts["conversation_id"])
    if saver == "redis":  # every checkpoint survives: the whole conversation
        assert len(rows) == 14 and sum(r.removed_at is None for r in rows) == 2
    else:  # a shallow saver keeps its newest checkpoint only: what it removed is gone
        assert len(rows) == 2
    assert [as_expected(r) for r in rows] == expected_rows(facts["messages"])
    assert ArchivedConversation.objects.get(conversation_id=facts["conversation_id"]).summary == facts["summary"]


def test_the_customer_id_passed_only_as_configuration_is_found_in_the_metadata(stack, saver_python, tmp_path):
    """A saver that copies `configurable` into each checkpoint's metadata (as LangGraph's own
    get_checkpoint_metadata does) gives the customer id; the stock RedisSaver stores it
    nowhere, so there is nothing to find (written down in harness/agents.py's notes)."""
    expected = write(saver_python("0.5"), stack_url(stack), "redis", "cfg", tmp_path / "e.json", "configurable", "configurable_meta")
    by_scenario = {facts["scenario"]: (thread, facts) for thread, facts in expected["threads"].items()}

    run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    thread, facts = by_scenario["configurable_meta"]
    assert facts["customer_id"] is None and facts["metadata_customer_id"]
    assert {r.customer_id for r in archived(thread)} == {facts["metadata_customer_id"]}
    thread, facts = by_scenario["configurable"]
    assert facts["config_in_redis"]["customer_id"] == []  # nowhere in Redis
    assert {r.customer_id for r in archived(thread)} == {None}


@pytest.mark.parametrize(
    "scenario, blind",
    [
        # The reader no longer sees the subgraph's documents: its messages are never archived.
        ("subgraph_interrupt", "is_document"),
        # The reader no longer reads pending writes: the finished tool's result is never archived.
        ("interrupt_pending", "read_pending"),
    ],
)
def test_the_delete_guard_keeps_what_a_blind_reader_missed(stack, saver_python, tmp_path, monkeypatch, scenario, blind):
    """A reader disabled on purpose stands for any layout the archiver does not understand:
    the guard, reading the keys again on its own, finds messages without a committed row,
    keeps every key of the thread and says so; a run that reads them all completes the work."""
    from conversations.checkpoints import documents, indexed, threads
    from conversations.checkpoints.saver import SaverLayout
    from conversations.checkpoints.writes import Pending

    expected = write(saver_python("0.5"), stack_url(stack), "redis", f"blind-{blind}", tmp_path / "e.json", scenario)
    [(thread, facts)] = expected["threads"].items()
    keys_before = sorted(k for k in stack.scan_iter(count=1000) if thread.encode() in k)
    if blind == "is_document":
        real = SaverLayout.is_document
        monkeypatch.setattr(SaverLayout, "is_document", lambda self, t, key, f: real(self, t, key, f) and threads.root_ns(f.get("checkpoint_ns")) == "")
    else:  # the root's pending writes are read with the newest checkpoint, the subgraphs' after
        monkeypatch.setattr(indexed, "read_pending", lambda *args: Pending())
        monkeypatch.setattr(documents, "read_pending", lambda *args: Pending())

    blinded = run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    assert blinded.archived == 0 and blinded.errors == 1
    assert "the delete guard refused them (not archived: " in blinded.error_messages[0]
    assert sorted(k for k in stack.scan_iter(count=1000) if thread.encode() in k) == keys_before
    assert len(archived(facts["conversation_id"])) < len(facts["messages"])

    monkeypatch.undo()
    seeing = run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    assert (seeing.archived, seeing.errors) == (1, 0)
    assert [as_expected(r) for r in archived(facts["conversation_id"])] == expected_rows(facts["messages"])
    assert leftovers(stack, thread) == []
