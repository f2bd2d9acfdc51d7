"""What cron jobs see: the entrypoint's environment file, the crontab lines, and a job run
the way cron runs it (an empty environment, /bin/sh -c LINE), end to end.

cron strips the environment and cuts a crontab line at every "%"; these tests prove values
with "%", quotes, "$", spaces and newlines still reach the job unchanged, that no line
holds a "%", and that a failing job is visible although django-crontab exits 0."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PLAIN_URL, clock_environment
from tests.factories import hours_ago, lc, plain_value

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
WRAPPER = ROOT / "docker" / "cron-job.sh"
VENV_BIN = str(Path(sys.executable).parent)

TRICKY = {
    "DATABASE_URL": "postgresql://archiver:p%40ss%25w0rd@data:5432/archive",
    "DJANGO_SECRET_KEY": "it's a \"secret\" with spaces, $HOME, ${PATH}, `id`, $(touch PWNED) and \\ a backslash",
    "ARCHIVER_TEST_PERCENT": "100% %s %% % %%%",
    "ARCHIVER_TEST_NEWLINES": "line one\nline two\n\n",
    "ARCHIVER_TEST_QUOTES": "'single' \"double\" '\"'\"' end'",
    "ARCHIVER_TEST_SHELL": "a; exit 1 && b | c > /dev/null & # not a comment",
    "ARCHIVER_TEST_GLOB": "* ? [a-z] ~ ~root",
    "ARCHIVER_TEST_SPACES": "  leading and trailing  ",
    "ARCHIVER_TEST_TAB": "\t",
    "ARCHIVER_TEST_EMPTY": "",
    "ARCHIVER_TEST_UNICODE": "conversación €",
}
# What cron itself gives a job (Debian cron): nothing else survives.
CRON_ENV = {"HOME": "/root", "LOGNAME": "root", "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for the scripts: this venv's python first on PATH, nothing from the
    test run's Django or archiver settings."""
    return {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "PYTHON": sys.executable,
        "LANG": "C.UTF-8",
        **extra,
    }


def write_cron_env(env_file: Path, **values: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint's own step, called by sourcing docker/entrypoint.sh."""
    return subprocess.run(
        ["bash", "-c", f"source {ENTRYPOINT} && write_cron_env"],
        env=base_env(ARCHIVER_CRON_ENV_FILE=str(env_file), **values),
        capture_output=True,
        text=True,
        timeout=60,
    )


DUMP = "import json, os; print(json.dumps(dict(os.environ)))"


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_values_round_trip_exactly_through_the_env_file(tmp_path, shell):
    env_file = tmp_path / "cron-env"
    result = write_cron_env(env_file, **TRICKY, **{"NOT-A-NAME": "x", "ARCHIVER_CRON_USER": ""})
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    # Source it in an empty environment, as a cron job does, then print what arrived.
    restored = subprocess.run(
        ["env", "-i", shell, "-c", f'. "$0" && exec {sys.executable} -c "$1"', str(env_file), DUMP],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert restored.returncode == 0, restored.stderr
    environ = json.loads(restored.stdout)
    for name, value in TRICKY.items():
        assert environ[name] == value, name
    assert environ["PATH"].startswith(VENV_BIN)
    assert "NOT-A-NAME" not in env_file.read_text()
    assert not (tmp_path / "PWNED").exists()  # nothing in a value was executed


def test_the_env_file_holds_no_shell_state_and_is_replaced_whole(tmp_path):
    env_file = tmp_path / "cron-env"
    assert write_cron_env(env_file, ARCHIVER_TEST_VALUE="first", HOME="/root", SHLVL="3").returncode == 0
    assert write_cron_env(env_file, ARCHIVER_TEST_VALUE="second").returncode == 0

    text = env_file.read_text()
    assert "export ARCHIVER_TEST_VALUE=second\n" in text and "first" not in text
    assert "HOME=" not in text and "SHLVL=" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["cron-env"]  # no temporary file left


def test_an_unwritable_env_file_stops_the_entrypoint(tmp_path):
    result = write_cron_env(tmp_path / "missing-folder" / "cron-env")
    assert result.returncode == 1
    assert "entrypoint: FATAL: cannot write" in result.stderr
    assert "cron jobs would run without DATABASE_URL and REDIS_URL" in result.stderr


def crontab_lines(env_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; sys.path.insert(0, 'docker'); import startup; "
        "print('\\n'.join(startup.expected_crontab_lines()))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=base_env(ARCHIVER_CRON_ENV_FILE=str(env_file), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("minutes", "schedule"), [(None, "0 * * * *"), ("60", "0 * * * *"), ("30", "*/30 * * * *"), ("15", "*/15 * * * *")]
)
def test_crontab_lines_hold_no_values_and_no_percent(tmp_path, minutes, schedule):
    env_file = tmp_path / "dir with space" / "cron env"
    extra = {"ARCHIVER_SCHEDULE_MINUTES": minutes} if minutes else {}
    result = crontab_lines(env_file, **extra, **TRICKY)
    assert result.returncode == 0, result.stderr

    archive, purge = result.stdout.splitlines()
    prefix = f"{WRAPPER} '{env_file}' {sys.executable} {ROOT / 'manage.py'} crontab run "
    assert archive.startswith(f"{schedule} {prefix}")
    assert purge.startswith(f"30 3 * * * {prefix}")
    for line in (archive, purge):
        assert "%" not in line
        assert line.endswith(" # django-cronjobs for archive_site")
        assert not any(value and value in line for value in TRICKY.values())


@pytest.mark.parametrize("value", ["45", "0", "hourly", "60 "[:-1] + "m"])
def test_an_unsupported_schedule_is_refused(tmp_path, value):
    result = crontab_lines(tmp_path / "cron-env", ARCHIVER_SCHEDULE_MINUTES=value)
    assert result.returncode != 0
    assert f"ImproperlyConfigured: ARCHIVER_SCHEDULE_MINUTES={value!r} is not supported; use 60" in result.stderr


def run_like_cron(line: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run a crontab line's command the way cron does, with the job's output captured."""
    command = line.split(" # ")[0].split(" ", 5)[5]
    out, err = tmp_path / "job.out", tmp_path / "job.err"
    out.touch()
    err.touch()
    hooks = {"CRON_JOB_STDOUT": str(out), "CRON_JOB_STDERR": str(err), **clock_environment()}
    result = subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in {**CRON_ENV, **hooks}.items()), "/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    return result, out.read_text(), err.read_text()


def archive_job(tmp_path: Path, redis_url: str) -> tuple[str, Path, Path]:
    """An environment file as the entrypoint writes it, the schema in an SQLite file, and the
    archive job's crontab line."""
    database, health = tmp_path / "archive.sqlite3", tmp_path / "health.json"
    env_file = tmp_path / "cron-env"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_url,
        "ARCHIVER_HEALTH_FILE": str(health),
        "ARCHIVER_RETRY_DELAY_SECONDS": "0",
        "DJANGO_SECRET_KEY": TRICKY["DJANGO_SECRET_KEY"],
        "ARCHIVER_TEST_PERCENT": TRICKY["ARCHIVER_TEST_PERCENT"],
    }
    assert write_cron_env(env_file, **env).returncode == 0
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=base_env(**env), capture_output=True, text=True, timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr
    lines = crontab_lines(env_file, **env)
    assert lines.returncode == 0, lines.stderr
    return lines.stdout.splitlines()[0], database, health


def test_a_job_run_like_cron_archives_with_the_containers_environment(tmp_path, plain_redis):
    plain_redis.set(
        "langgraph:checkpoint:wa-msg-cron:1",
        plain_value([lc("human", "hola 100%", "h1"), lc("ai", "buenas", "a1")], ts=hours_ago(24), customer_id="c1"),
    )
    line, database, health = archive_job(tmp_path, PLAIN_URL)

    result, out, err = run_like_cron(line, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""  # everything went to the container's streams
    assert "Archived 1 conversations (2 messages)" in out
    assert "Starting conversation archival run at" in err
    document = json.loads(health.read_text())
    assert (document["status"], document["checkpoints_archived"], document["messages_archived"]) == ("healthy", 1, 2)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM conversation_history").fetchone() == (2,)
    assert plain_redis.keys("langgraph:checkpoint:*") == []


def test_a_failing_job_is_visible_although_cron_sees_exit_0(tmp_path):
    line, _, health = archive_job(tmp_path, "redis://127.0.0.1:1/0")  # nothing listens there

    result, out, err = run_like_cron(line, tmp_path)

    assert result.returncode == 0  # django-crontab swallows the failure ...
    assert "Failed to complete cronjob" in err  # ... but the container's log shows it
    assert "CommandError" in err
    assert json.loads(health.read_text())["status"] == "unhealthy"  # and so does the health file


def run_wrapper(tmp_path: Path, env_file: Path, *command: str) -> tuple[subprocess.CompletedProcess[str], str, str]:
    out, err = tmp_path / "out", tmp_path / "err"
    out.touch()
    err.touch()
    result = subprocess.run(
        ["env", "-i", f"CRON_JOB_STDOUT={out}", f"CRON_JOB_STDERR={err}", str(WRAPPER), str(env_file), *command],
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    return result, out.read_text(), err.read_text()


def test_a_missing_env_file_fails_the_job_with_a_message(tmp_path):
    result, out, err = run_wrapper(tmp_path, tmp_path / "never-written", sys.executable, "-c", "print('ran')")
    assert result.returncode == 1
    assert out == ""
    assert "cannot read" in err and "did not run" in err and "restart the container" in err


def test_jobs_drop_root_for_the_cron_user(tmp_path):
    env_file = tmp_path / "cron-env"
    assert write_cron_env(env_file, ARCHIVER_CRON_USER="nobody", ARCHIVER_TEST_VALUE="50% off").returncode == 0
    tmp_path.chmod(0o755)
    # A shell, not this Python: the interpreter running the tests need not be readable by nobody.
    report = 'printf "%s|%s|%s" "$(id -u)" "$HOME" "$ARCHIVER_TEST_VALUE"'

    result, out, err = run_wrapper(tmp_path, env_file, "/bin/sh", "-c", report)

    assert result.returncode == 0, err
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:  # as cron runs it: the job runs as the cron user
        assert out == f"{nobody.pw_uid}|{nobody.pw_dir}|50% off"
    else:  # an unprivileged caller cannot switch; the job runs as the caller
        assert out.startswith(f"{os.geteuid()}|")


def test_an_unknown_cron_user_fails_the_job(tmp_path):
    env_file = tmp_path / "cron-env"
    assert write_cron_env(env_file, ARCHIVER_CRON_USER="no-such-user-here").returncode == 0
    result, out, err = run_wrapper(tmp_path, env_file, "true")
    if os.geteuid() == 0:
        assert result.returncode == 1
        assert "ARCHIVER_CRON_USER=no-such-user-here is not a user of this system" in err
    else:
        assert result.returncode == 0
