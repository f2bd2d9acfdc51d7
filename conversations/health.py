"""The health file that monitoring and the container's health check read.

Its format is the operations guide's, key for key:
    {"last_run": "2025-10-28T14:00:00+01:00", "status": "healthy",
     "checkpoints_archived": 12, "messages_archived": 143, "errors": 0}
Times are in the project's time zone (Europe/Madrid) with their offset. The file is written
atomically (a temporary file in the same folder, then a rename), so a reader never sees half.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.utils import timezone

from conversations import conf
from conversations.files import hand_over, write_atomically


def health_path() -> Path:
    return Path(conf.health_file())


def health_document(
    last_run: datetime, healthy: bool, checkpoints: int, messages: int, errors: int, *, mirrored: int = 0, mirrored_messages: int = 0
) -> dict[str, Any]:
    """The guide's five keys, and what the live mirror copied (two keys the guide's readers ignore)."""
    return {
        "last_run": timezone.localtime(last_run).isoformat(timespec="seconds"),
        "status": "healthy" if healthy else "unhealthy",
        "checkpoints_archived": checkpoints,
        "messages_archived": messages,
        "errors": errors,
        "conversations_mirrored": mirrored,
        "messages_mirrored": mirrored_messages,
    }


def write_health(document: dict[str, Any], path: Path | None = None) -> Path:
    """Replace the health file in one step; raises OSError when the folder is not writable."""
    path = path or health_path()
    write_atomically(path, json.dumps(document, indent=2) + "\n", mode=0o644)
    hand_over(path)
    return path


def read_health(path: Path | None = None) -> dict[str, Any]:
    with open(path or health_path(), encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document


# --- Checking the health file (check_archiver_health and the container's health check) ---
#
# The check trusts nothing in the file: every key and type is verified, and any problem is
# reported as one line naming what to do. A run is expected every SCHEDULE_MINUTES; the age
# limit (HEALTH_MAX_AGE_MINUTES, 90 as in the operations guide) is never allowed below one
# interval plus HEALTH_MARGIN, so a misconfigured limit cannot report a healthy archiver as
# stuck between two scheduled runs.

HEALTH_MARGIN = timedelta(minutes=30)
# A last_run this far ahead of the clock is accepted (clocks of two containers drift a little).
CLOCK_SKEW = timedelta(minutes=5)
HEALTH_COUNTS = ("checkpoints_archived", "messages_archived", "errors")
HEALTH_KEYS = ("last_run", "status", *HEALTH_COUNTS)


@dataclass(frozen=True)
class HealthVerdict:
    healthy: bool
    message: str


def health_max_age(requested_minutes: float | None = None) -> timedelta:
    """The age limit for last_run: the requested minutes (default HEALTH_MAX_AGE_MINUTES),
    raised to at least one schedule interval plus HEALTH_MARGIN."""
    minutes = conf.health_max_age_minutes() if requested_minutes is None else requested_minutes
    floor = timedelta(minutes=conf.schedule_minutes()) + HEALTH_MARGIN
    return max(timedelta(minutes=minutes), floor)


def check_health(
    now: datetime | None = None, max_age: timedelta | None = None, path: Path | None = None
) -> HealthVerdict:
    """Judge the health file at `path` (default: HEALTH_FILE) as of `now`; never raises."""
    path = path or health_path()
    now = now or timezone.now()
    max_age = max_age or health_max_age()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return HealthVerdict(
            False,
            f"no health file at {path}: the archiver has not finished a run yet, or ARCHIVER_HEALTH_FILE "
            "points somewhere else than where it writes.",
        )
    except OSError as exc:
        return HealthVerdict(False, f"cannot read the health file {path}: {exc.strerror or exc}.")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return HealthVerdict(False, f"the health file {path} is not JSON ({exc}); the next run rewrites it.")
    problems = _format_problems(document)
    if problems:
        return HealthVerdict(False, f"the health file {path} is malformed: {'; '.join(problems)}.")

    last_run = _parse_last_run(document["last_run"])
    assert last_run is not None  # _format_problems checked it
    age = now - last_run
    counts = (
        f"{document['checkpoints_archived']} checkpoints, {document['messages_archived']} messages archived, "
        f"{document['errors']} errors"
    )
    when = f"last run {document['last_run']}"
    reasons = []
    if age > max_age:
        reasons.append(
            f"{when} is {_minutes(age)} old, over the {_minutes(max_age)} limit: the archiver is stuck or not "
            "scheduled (see the archiver's logs; restart it)"
        )
    elif age < -CLOCK_SKEW:
        reasons.append(f"{when} is {_minutes(-age)} in the future: check the clocks of this host and the archiver's")
    if document["status"] != "healthy":
        reasons.append(f"{when} was unhealthy")
    if document["errors"] > 0:
        reasons.append(f"{document['errors']} errors in the {when} (see the archiver's logs)")
    if reasons:
        return HealthVerdict(False, f"{'; '.join(reasons)}; {counts}.")
    ago = _minutes(max(age, timedelta(0)))
    return HealthVerdict(True, f"healthy: {when}, {ago} ago (limit {_minutes(max_age)}); {counts}.")


def _format_problems(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return [f"it holds a JSON {type(document).__name__}, not an object with the keys {', '.join(HEALTH_KEYS)}"]
    problems = []
    missing = [key for key in HEALTH_KEYS if key not in document]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if "last_run" in document:
        value = document["last_run"]
        if not isinstance(value, str) or _parse_last_run(value) is None:
            problems.append(f"last_run {value!r} is not an ISO-8601 time with a UTC offset")
    if "status" in document and document["status"] not in ("healthy", "unhealthy"):
        problems.append(f"status {document['status']!r} is neither 'healthy' nor 'unhealthy'")
    for key in HEALTH_COUNTS:
        if key in document:
            value = document[key]
            # bool is an int subclass in Python; true/false in the file is still wrong.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{key} {value!r} is not a whole number >= 0")
    return problems


def _parse_last_run(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
