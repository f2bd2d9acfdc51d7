"""Prometheus metrics: the textfile written after every run, /metrics, and the alert rules,
checked with promtool (Debian's prometheus package)."""

from __future__ import annotations

import math
import shutil
import subprocess
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from conversations.metrics import exposition
from conversations.models import ArchiveRun, QuarantinedCheckpoint
from tests.factories import hours_ago, lc, plain_value

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def seed(client, conversation_id: str, age_hours: float, ttl_seconds: int | None = None) -> None:
    value_ = plain_value([lc("human", "hola", f"{conversation_id}-h"), lc("ai", "buenas", f"{conversation_id}-a")], ts=hours_ago(age_hours))
    client.set(f"langgraph:checkpoint:{conversation_id}:1", value_, ex=ttl_seconds)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (the README's test set-up does).")
    return found


def test_the_textfile_after_each_run_counts_every_run_and_what_is_at_risk(plain_redis, settings):
    seed(plain_redis, "due-1", 30)
    seed(plain_redis, "young-1", 1, ttl_seconds=20 * 3600)
    seed(plain_redis, "young-2", 2, ttl_seconds=5 * 3600)  # the first to expire
    call_command("archive_checkpoints", stdout=StringIO())
    seed(plain_redis, "due-2", 30)
    call_command("archive_checkpoints", stdout=StringIO())

    path = Path(settings.ARCHIVER["METRICS_TEXTFILE"])
    found = samples(path.read_text())
    assert value(found, "archiver_runs_total", status="healthy") == 2
    assert value(found, "archiver_runs_total", status="unhealthy") == 0
    assert value(found, "archiver_conversations_archived_total") == 2
    assert value(found, "archiver_messages_archived_total") == 4
    assert value(found, "archiver_errors_total") == 0
    assert value(found, "archiver_last_run_success") == 1
    last = ArchiveRun.objects.order_by("-started_at").first()
    assert value(found, "archiver_last_run_timestamp_seconds") == pytest.approx(last.finished_at.timestamp())
    # Without the mirror (these tests' default) the two young conversations are at risk.
    assert value(found, "archiver_redis_conversations") == 2
    assert value(found, "archiver_unarchived_conversations") == 2
    assert 5 * 3600 - 60 < value(found, "archiver_unarchived_expiry_seconds") <= 5 * 3600
    assert value(found, "archiver_history_rows_estimated") == 4
    assert value(found, "archiver_history_table_bytes") > 0
    assert not [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]  # no temporary left


def test_with_the_live_mirror_nothing_young_is_at_risk(plain_redis, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "MIRROR_LIVE": True}
    seed(plain_redis, "young-1", 1, ttl_seconds=20 * 3600)
    call_command("archive_checkpoints", stdout=StringIO())
    found = samples(Path(settings.ARCHIVER["METRICS_TEXTFILE"]).read_text())
    assert value(found, "archiver_conversations_mirrored_total") == 1
    assert value(found, "archiver_messages_mirrored_total") == 2
    assert value(found, "archiver_redis_conversations") == 1
    assert value(found, "archiver_unarchived_conversations") == 0
    assert value(found, "archiver_unarchived_expiry_seconds") == math.inf
    assert 20 * 3600 - 60 < value(found, "archiver_redis_next_expiry_seconds") <= 20 * 3600


def test_the_at_risk_gauge_keeps_falling_when_no_run_comes(db):
    now = timezone.now()
    ArchiveRun.objects.create(
        started_at=now - timedelta(hours=3), finished_at=now - timedelta(hours=3), status="healthy",
        waiting=4, at_risk=1, at_risk_expires_at=now - timedelta(minutes=10), next_expiry_at=now - timedelta(minutes=10),
    )
    ArchiveRun.objects.create(started_at=now - timedelta(hours=1), finished_at=now - timedelta(hours=1), status="unhealthy", errors=1)
    QuarantinedCheckpoint.objects.create(key="q", source="plain", raw_value=b"x", value_sha1="a", error="e", quarantined_at=now)
    found = samples(exposition().decode())
    # The newest run could not look at every key: the gauges come from the one before.
    assert value(found, "archiver_unarchived_conversations") == 1
    assert -660 < value(found, "archiver_unarchived_expiry_seconds") < -540
    assert value(found, "archiver_last_run_success") == 0
    assert value(found, "archiver_last_success_timestamp_seconds") == pytest.approx((now - timedelta(hours=3)).timestamp())
    assert value(found, "archiver_errors_total") == 1
    assert value(found, "archiver_quarantined_checkpoints") == 1


def test_a_run_that_cannot_reach_redis_leaves_the_at_risk_gauges_to_the_last_complete_run(plain_redis, settings):
    seed(plain_redis, "young-1", 1, ttl_seconds=5 * 3600)
    call_command("archive_checkpoints", stdout=StringIO())
    settings.ARCHIVER = {**settings.ARCHIVER, "REDIS_URL": "redis://127.0.0.1:1/0"}
    with pytest.raises(Exception):
        call_command("archive_checkpoints", stdout=StringIO(), stderr=StringIO())
    assert ArchiveRun.objects.order_by("-started_at").first().waiting is None
    found = samples(Path(settings.ARCHIVER["METRICS_TEXTFILE"]).read_text())
    assert value(found, "archiver_last_run_success") == 0
    assert value(found, "archiver_unarchived_conversations") == 1


def test_metrics_endpoint_without_and_with_a_token(client, settings):
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"archiver_runs_total" in response.content
    assert client.post("/metrics").status_code == 405

    settings.ARCHIVER = {**settings.ARCHIVER, "METRICS_TOKEN": "s3cret"}
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_no_textfile_when_the_setting_is_empty(plain_redis, settings, tmp_path):
    settings.ARCHIVER = {**settings.ARCHIVER, "METRICS_TEXTFILE": ""}
    call_command("archive_checkpoints", stdout=StringIO())
    assert not list(tmp_path.glob("*.prom"))


def test_promtool_accepts_the_metrics_and_the_alert_rules(plain_redis, settings):
    seed(plain_redis, "young-1", 1, ttl_seconds=3600)
    call_command("archive_checkpoints", stdout=StringIO())
    text = Path(settings.ARCHIVER["METRICS_TEXTFILE"]).read_text()
    lint = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rules = subprocess.run([promtool(), "check", "rules", str(ROOT / "docs" / "alerts.yml")], capture_output=True, text=True)
    assert rules.returncode == 0 and "SUCCESS: 4 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_the_alert_rules_fire_on_what_they_watch():
    """promtool's rule unit tests (docs/alerts_test.yml): each alert fires on its condition and
    stays quiet otherwise."""
    result = subprocess.run([promtool(), "test", "rules", str(ROOT / "docs" / "alerts_test.yml")], capture_output=True, text=True, cwd=ROOT / "docs")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
