"""Start-up steps of the containers that are easier to get right in Python than in shell.

    python docker/startup.py write-env FILE     the environment, for cron jobs to source
    python docker/startup.py wait-db SECONDS    until the database accepts connections
    python docker/startup.py verify-crontab     the installed crontab holds every CRONJOBS line

Safety design:
- write-env quotes every value with shlex.quote (POSIX single quotes), which sh, dash and
  bash all read back byte for byte, whatever the value holds ("%", quotes, "$", backticks,
  spaces, newlines). Nothing in the file is ever expanded or executed. It is written to a
  temporary file created with mode 600 in the same folder, then renamed, so a job never
  sources half a file and no other user can read the secrets in it.
- verify-crontab compares `crontab -l` with the lines django-crontab itself generates,
  because `manage.py crontab add` exits 0 even when nothing was installed (no crontab
  binary, a crontab that ignored the write).
Every failure prints one line saying what to do and exits 1.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(APP_DIR))

from conversations.files import write_atomically  # noqa: E402  (needs APP_DIR on the path)

# Variables that belong to the shell or the login rather than to the app: cron and
# cron-job.sh set their own.
NOT_EXPORTED = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "HOME", "USER", "LOGNAME", "SHELL", "MAIL", "TERM"})
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StartupError(Exception):
    """A start-up step failed; the message says what to do."""


def env_file_text(environ: Mapping[str, str]) -> str:
    lines = ["# The container's environment for cron jobs; written by docker/entrypoint.sh at start.\n"]
    for name in sorted(environ):
        if name in NOT_EXPORTED or not NAME.fullmatch(name):
            continue
        lines.append(f"export {name}={shlex.quote(environ[name])}\n")
    return "".join(lines)


def write_env(path: Path, environ: Mapping[str, str]) -> None:
    # Mode 600; surrogateescape writes back undecodable bytes of the environment unchanged.
    write_atomically(path, env_file_text(environ), errors="surrogateescape")


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archive_site.settings")
    import django

    django.setup()


def wait_for_database(seconds: float, pause: float = 2.0) -> None:
    _django()
    from django.db import DatabaseError, connection

    deadline = time.monotonic() + seconds
    while True:
        try:
            connection.ensure_connection()
            return
        except DatabaseError as exc:
            detail = _first_line(exc)
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"the database did not accept connections within {seconds:g}s ({detail}); check DATABASE_URL "
                    "and that the data service is up (docker-compose ps data)."
                ) from None
            print(f"startup: waiting for the database: {detail}", file=sys.stderr)
            connection.close()
            time.sleep(pause)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def expected_crontab_lines() -> list[str]:
    _django()
    from django_crontab.crontab import Crontab

    crontab = Crontab(verbosity=0, readonly=True)
    crontab.crontab_lines = []
    crontab.add_jobs()
    return [line.rstrip("\n") for line in crontab.crontab_lines]


def verify_crontab() -> list[str]:
    """The crontab's lines for CRONJOBS, each checked to be installed, as `schedule command` text."""
    _django()
    from django.conf import settings

    expected = expected_crontab_lines()
    if not expected:
        raise StartupError("settings.CRONJOBS is empty: nothing would ever run; check archive_site/settings.py.")
    for line in expected:
        if "%" in line:
            raise StartupError(f"the crontab line {line!r} holds '%', which cron turns into a newline.")
    command = [*shlex.split(settings.CRONTAB_EXECUTABLE), "-l"]
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise StartupError(
            f"{command[0]} is not installed, so no job would ever run; install cron in the image."
        ) from None
    if listing.returncode != 0:
        raise StartupError(
            f"'{' '.join(command)}' failed (exit {listing.returncode}: {listing.stderr.strip() or 'no message'}); "
            "the jobs are not installed."
        )
    installed = set(listing.stdout.splitlines())
    missing = [line for line in expected if line not in installed]
    if missing:
        raise StartupError(
            f"the crontab lacks {len(missing)} of the {len(expected)} jobs after 'manage.py crontab add' "
            f"(first missing: {missing[0]!r}); cron would never run them."
        )
    return [_describe(job) for job in settings.CRONJOBS]


def _describe(job: tuple) -> str:
    """'0 * * * * archive_checkpoints' for a call_command job, else the schedule and the function."""
    args = job[2] if len(job) > 2 and isinstance(job[2], (list, tuple)) else []
    what = " ".join(map(str, args)) if job[1].endswith("call_command") and args else job[1]
    return f"{job[0]} {what}"


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["write-env"] and len(argv) == 2:
            write_env(Path(argv[1]), os.environ)
            print(f"startup: wrote the environment for cron jobs to {argv[1]}")
        elif argv[:1] == ["wait-db"] and len(argv) == 2:
            wait_for_database(float(argv[1]))
        elif argv == ["verify-crontab"]:
            jobs = verify_crontab()
            print(f"startup: the crontab holds all {len(jobs)} jobs: {'; '.join(jobs)}")
        else:
            print(__doc__.split("\n\n")[1], file=sys.stderr)
            return 2
    except (StartupError, OSError) as exc:
        print(f"startup: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
