"""The health file that monitoring and the container's health check read.

Its format is the operations guide's, key for key:
    {"last_run": "2025-10-28T14:00:00+01:00", "status": "healthy",
     "checkpoints_archived": 12, "messages_archived": 143, "errors": 0}
Times are in the project's time zone (Europe/Madrid) with their offset. The file is written
atomically (a temporary file in the same folder, then a rename), so a reader never sees half.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from conversations import conf


def health_path() -> Path:
    return Path(conf.get("HEALTH_FILE"))


def health_document(last_run: datetime, healthy: bool, checkpoints: int, messages: int, errors: int) -> dict[str, Any]:
    return {
        "last_run": timezone.localtime(last_run).isoformat(timespec="seconds"),
        "status": "healthy" if healthy else "unhealthy",
        "checkpoints_archived": checkpoints,
        "messages_archived": messages,
        "errors": errors,
    }


def write_health(document: dict[str, Any], path: Path | None = None) -> Path:
    """Replace the health file in one step; raises OSError when the folder is not writable."""
    path = path or health_path()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_health(path: Path | None = None) -> dict[str, Any]:
    with open(path or health_path(), encoding="utf-8") as handle:
        return json.load(handle)
