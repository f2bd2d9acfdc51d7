"""check_archiver_health, the container's health check: every outcome, one line each, with
the clock frozen so each age limit is tested one second on either side. No database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from freezegun import freeze_time

from conversations.health import health_document, write_health

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 29, 13, 0, 0, tzinfo=dt_timezone.utc)  # 14:00 in Madrid (+01:00)


@pytest.fixture
def health_file(settings, tmp_path) -> Path:
    path = tmp_path / "archiver_health.json"
    settings.ARCHIVER = {**settings.ARCHIVER, "HEALTH_FILE": str(path), "SCHEDULE_MINUTES": 60}
    settings.ARCHIVER.pop("HEALTH_MAX_AGE_MINUTES", None)  # the default, 90
    return path


def write(path: Path, age: timedelta = timedelta(minutes=10), **changes: Any) -> dict[str, Any]:
    """A health file as archive_checkpoints writes it, last run `age` before NOW."""
    document = health_document(NOW - age, True, 12, 143, 0)
    document.update(changes)
    write_health(document, path)
    return document


def check(*args: str) -> str:
    out = StringIO()
    with freeze_time(NOW):
        call_command("check_archiver_health", *args, stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def failure(*args: str) -> str:
    with freeze_time(NOW), pytest.raises(CommandError) as caught:
        call_command("check_archiver_health", *args, stdout=StringIO())
    message = str(caught.value)
    assert "\n" not in message and message.startswith("unhealthy: "), message
    return message


def test_a_recent_healthy_run_passes_with_one_line(health_file):
    document = write(health_file, timedelta(minutes=12))

    line = check()

    assert document["last_run"] == "2026-11-29T13:48:00+01:00"
    assert line == (
        "healthy: last run 2026-11-29T13:48:00+01:00, 12 min ago (limit 90 min); "
        "12 checkpoints, 143 messages archived, 0 errors."
    )


def test_the_default_limit_is_the_guides_90_minutes(health_file):
    write(health_file, timedelta(minutes=90))
    assert check().startswith("healthy:")

    write(health_file, timedelta(minutes=90, seconds=1))
    message = failure()
    assert "is 90 min old, over the 90 min limit: the archiver is stuck or not scheduled" in message
    assert message.endswith("12 checkpoints, 143 messages archived, 0 errors.")


def test_max_age_option_moves_the_limit(health_file):
    write(health_file, timedelta(minutes=120))
    assert check("--max-age-minutes", "120").startswith("healthy:")
    assert "over the 100 min limit" in failure("--max-age-minutes", "100")


def test_max_age_setting_moves_the_default(health_file, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "HEALTH_MAX_AGE_MINUTES": 150}
    write(health_file, timedelta(minutes=150))
    assert check().endswith("(limit 2 h 30 min); 12 checkpoints, 143 messages archived, 0 errors.")

    write(health_file, timedelta(minutes=150, seconds=1))
    assert "over the 2 h 30 min limit" in failure()
    # The option still wins over the setting.
    assert check("--max-age-minutes", "160").startswith("healthy:")


def test_the_limit_is_never_below_one_interval_plus_a_margin(health_file, settings):
    # Hourly runs: a 10-minute limit would fail between every two runs; it becomes 60 + 30.
    write(health_file, timedelta(minutes=90))
    assert "(limit 90 min)" in check("--max-age-minutes", "10")

    settings.ARCHIVER = {**settings.ARCHIVER, "SCHEDULE_MINUTES": 15}
    write(health_file, timedelta(minutes=45))
    assert "(limit 45 min)" in check("--max-age-minutes", "10")
    write(health_file, timedelta(minutes=45, seconds=1))
    assert "over the 45 min limit" in failure("--max-age-minutes", "10")


def test_a_max_age_below_the_floor_says_which_limit_it_checks(health_file):
    write(health_file, timedelta(minutes=12))
    err = StringIO()
    with freeze_time(NOW):
        call_command("check_archiver_health", "--max-age-minutes", "10", stdout=StringIO(), stderr=err)
    assert err.getvalue().strip() == (
        "--max-age-minutes 10 is less than one schedule interval + 30 minutes; checking against 90 minutes instead."
    )
    err = StringIO()
    with freeze_time(NOW):
        call_command("check_archiver_health", "--max-age-minutes", "120", stdout=StringIO(), stderr=err)
    assert err.getvalue() == ""


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_max_age_that_is_not_positive_is_refused(health_file, value):
    write(health_file)
    with pytest.raises(CommandError, match="--max-age-minutes must be greater than 0"):
        call_command("check_archiver_health", "--max-age-minutes", value)


def test_an_unhealthy_run_fails(health_file):
    write(health_file, status="unhealthy", errors=3)

    message = failure()

    assert "last run 2026-11-29T13:50:00+01:00 was unhealthy" in message
    assert "3 errors in the last run" in message
    assert "over the" not in message


def test_errors_fail_even_when_the_status_says_healthy(health_file):
    write(health_file, errors=1)
    assert "1 errors in the last run 2026-11-29T13:50:00+01:00 (see the archiver's logs)" in failure()


def test_every_reason_is_given_on_the_one_line(health_file):
    write(health_file, timedelta(hours=5), status="unhealthy", errors=2)
    message = failure()
    assert "is 5 h 00 min old, over the 90 min limit" in message
    assert "was unhealthy" in message and "2 errors" in message


def test_a_missing_file_fails(health_file):
    message = failure()
    assert message == (
        f"unhealthy: no health file at {health_file}: the archiver has not finished a run yet, or "
        "ARCHIVER_HEALTH_FILE points somewhere else than where it writes."
    )


def test_an_unreadable_file_fails(health_file):
    health_file.mkdir()  # unreadable as a file even for root
    assert f"unhealthy: cannot read the health file {health_file}: Is a directory." == failure()


@pytest.mark.parametrize(
    "content",
    [b"", b"{\"last_run\": ", b"not json at all", b"\xff\xfe{}"],
    ids=["empty", "truncated", "text", "not-utf8"],
)
def test_a_file_that_is_not_json_fails(health_file, content):
    health_file.write_bytes(content)
    message = failure()
    assert message.startswith(f"unhealthy: the health file {health_file} is not JSON (")
    assert message.endswith("); the next run rewrites it.")


@pytest.mark.parametrize("content", ["[]", "null", "12", "\"healthy\""])
def test_json_that_is_not_an_object_fails(health_file, content):
    health_file.write_text(content)
    assert "is malformed: it holds a JSON" in failure()


def test_missing_keys_are_named(health_file):
    document = health_document(NOW, True, 1, 2, 0)
    del document["errors"], document["status"]
    health_file.write_text(json.dumps(document))
    assert failure() == f"unhealthy: the health file {health_file} is malformed: missing status, errors."


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"last_run": 1764421200}, "last_run 1764421200 is not an ISO-8601 time with a UTC offset"),
        ({"last_run": "yesterday"}, "last_run 'yesterday' is not an ISO-8601 time"),
        ({"last_run": "2026-11-29T13:50:00"}, "last_run '2026-11-29T13:50:00' is not an ISO-8601 time with a UTC offset"),
        ({"status": "ok"}, "status 'ok' is neither 'healthy' nor 'unhealthy'"),
        ({"status": None}, "status None is neither"),
        ({"errors": "0"}, "errors '0' is not a whole number >= 0"),
        ({"errors": False}, "errors False is not a whole number >= 0"),
        ({"checkpoints_archived": -1}, "checkpoints_archived -1 is not a whole number >= 0"),
        ({"messages_archived": 1.5}, "messages_archived 1.5 is not a whole number >= 0"),
    ],
)
def test_wrong_types_are_named(health_file, changes, problem):
    write(health_file, **changes)
    message = failure()
    assert message.startswith(f"unhealthy: the health file {health_file} is malformed: ")
    assert problem in message


def test_other_offsets_are_compared_as_instants(health_file):
    # The same instant as 13:50 in Madrid, written in UTC: 10 minutes old, not 70.
    write(health_file, last_run="2026-11-29T12:50:00Z")
    assert "10 min ago" in check()


def test_a_last_run_in_the_future_fails_beyond_clock_skew(health_file):
    write(health_file, timedelta(minutes=-5))
    assert check().startswith("healthy: last run 2026-11-29T14:05:00+01:00, 0 min ago")

    write(health_file, timedelta(minutes=-6))
    assert "is 6 min in the future: check the clocks" in failure()


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As the container's HEALTHCHECK runs it: a process, its exit code, settings from the env."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHIVER_", "DJANGO_SETTINGS"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check_archiver_health"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "archive_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_codes_and_environment_variables_from_the_command_line(tmp_path):
    path = tmp_path / "health.json"
    # Real clock here: write the file relative to now.
    write_health(health_document(datetime.now(dt_timezone.utc) - timedelta(minutes=100), True, 1, 2, 0), path)

    stale = run_cli({"ARCHIVER_HEALTH_FILE": str(path)})
    assert stale.returncode == 1
    assert stale.stdout == ""
    assert stale.stderr.count("\n") == 1 and "over the 90 min limit" in stale.stderr

    relaxed = run_cli({"ARCHIVER_HEALTH_FILE": str(path), "ARCHIVER_HEALTH_MAX_AGE_MINUTES": "120"})
    assert relaxed.returncode == 0, relaxed.stderr
    assert relaxed.stdout.count("\n") == 1 and "(limit 2 h 00 min)" in relaxed.stdout

    missing = run_cli({"ARCHIVER_HEALTH_FILE": str(tmp_path / "nothing.json")})
    assert missing.returncode == 1 and "no health file at" in missing.stderr


def test_the_schedule_variable_raises_the_floor_from_the_command_line(tmp_path):
    path = tmp_path / "health.json"
    write_health(health_document(datetime.now(dt_timezone.utc) - timedelta(minutes=100), True, 1, 2, 0), path)
    # Every 15 minutes and a 30-minute limit: the floor is 15 + 30 = 45, so 100 minutes is stale.
    env = {"ARCHIVER_HEALTH_FILE": str(path), "ARCHIVER_SCHEDULE_MINUTES": "15", "ARCHIVER_HEALTH_MAX_AGE_MINUTES": "30"}
    assert "over the 45 min limit" in run_cli(env).stderr


def test_a_health_file_root_writes_goes_to_the_scheduled_runs_user(tmp_path, monkeypatch):
    """`docker-compose exec archiver python manage.py archive_checkpoints` runs as root: the file it
    leaves in sticky /tmp must stay replaceable by the next scheduled run (ARCHIVER_CRON_USER)."""
    import os
    import pwd

    from conversations.health import health_document, write_health

    monkeypatch.setenv("ARCHIVER_CRON_USER", "nobody")
    path = write_health(health_document(datetime.now(dt_timezone.utc), True, 0, 0, 0), tmp_path / "health.json")
    expected = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert path.stat().st_uid == expected
