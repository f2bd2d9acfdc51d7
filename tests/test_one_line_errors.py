"""A setting that cannot be used, or a database that is down or has no schema, ends any command
with one line saying what to fix and exit status 1: the commands as an operator runs them,
each its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
UNREACHABLE = "postgresql://postgres@127.0.0.1:5999/x"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHIVER_", "DJANGO_"))}
    base.pop("LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**base, "DJANGO_SETTINGS_MODULE": "archive_site.settings", **env},
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"DATABASE_URL": "notaurl"}, "Configuration error: DATABASE_URL has the scheme ''; use postgresql://"),
        ({"ARCHIVER_BATCH_SIZE": "abc"}, "Configuration error: ARCHIVER_BATCH_SIZE='abc' is not a whole number."),
        ({"ARCHIVER_SCHEDULE_MINUTES": "45"}, "Configuration error: ARCHIVER_SCHEDULE_MINUTES='45' is not supported; use 60"),
        ({"ARCHIVER_HEALTH_MAX_AGE_MINUTES": "abc"}, "Configuration error: ARCHIVER_HEALTH_MAX_AGE_MINUTES='abc' is not a whole number."),
        ({"LOG_LEVEL": "bogus"}, "Configuration error: LOG_LEVEL='bogus' is not a log level; use DEBUG, INFO"),
        # Settings are checked like the flags, with the same words.
        ({"ARCHIVER_CUTOFF_HOURS": "-1"}, "Configuration error: ARCHIVER_CUTOFF_HOURS must be at least 0, not -1."),
        ({"ARCHIVER_BATCH_SIZE": "0"}, "Configuration error: ARCHIVER_BATCH_SIZE must be at least 1, not 0."),
        ({"ARCHIVER_WRITERS": "0"}, "Configuration error: ARCHIVER_WRITERS must be at least 1, not 0."),
        ({"ARCHIVER_RETENTION_MONTHS": "99999"}, "Configuration error: ARCHIVER_RETENTION_MONTHS must be at most 1200, not 99999."),
    ],
)
@pytest.mark.parametrize("command", [["archive_checkpoints", "--dry-run"], ["purge_history", "--dry-run"], ["check_archiver_health"]])
def test_a_setting_that_cannot_be_used_is_one_line(env, expected, command):
    assert one_line(manage(*command, **env)).startswith(expected)


@pytest.mark.parametrize("command", [["purge_history", "--months", "6", "--dry-run"], ["erase_customer", "cust-42"]])
def test_an_unreachable_database_is_one_line(command):
    line = one_line(manage(*command, DATABASE_URL=UNREACHABLE))
    assert line.startswith("Database error: connection failed: ") and line.endswith("(check DATABASE_URL)")
    assert "5999" in line


def test_a_database_without_the_schema_is_one_line():
    name = f"noschema_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        line = one_line(manage("purge_history", "--dry-run", DATABASE_URL=ADMIN_URL.rsplit("/", 1)[0] + "/" + name))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    assert line == 'Database error: relation "conversation_history" does not exist (has `python manage.py migrate` been run?)'


def test_months_past_the_calendar_are_refused_in_one_line():
    result = manage("purge_history", "--months", "99999", DATABASE_URL=UNREACHABLE)
    assert result.returncode == 1
    assert result.stderr.strip() == "CommandError: --months must be at most 1200 (100 years); got 99999."


def test_traceback_still_shows_the_traceback():
    result = manage("check", "--traceback", LOG_LEVEL="bogus")
    assert result.returncode == 1 and "Traceback" in result.stderr and "ImproperlyConfigured" in result.stderr
