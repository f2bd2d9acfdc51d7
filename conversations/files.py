"""Writing a file so that readers see the old version or the new one, never half of either.

Plain Python, without Django, so the container's start-up helper can use it before Django
is configured.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, *, mode: int | None = None, errors: str = "strict") -> None:
    """Write `text` to a temporary file in the same folder, flush it to disk, then rename it
    over `path`. The file keeps mkstemp's mode 600 unless `mode` says otherwise. Raises
    OSError (the temporary file removed) when the folder is not writable or the disk is full."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def hand_over(path: Path) -> None:
    """Give a file that root just wrote to ARCHIVER_CRON_USER, the user the scheduled runs use
    (the archiver image sets it). An operator's `docker-compose exec archiver python manage.py
    archive_checkpoints` runs as root; its health file in /tmp (sticky) would otherwise be one
    that the next scheduled run may not replace."""
    user = os.environ.get("ARCHIVER_CRON_USER", "").strip()
    if not user or user == "root" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam(user)
        os.chown(path, account.pw_uid, account.pw_gid)
    except (KeyError, OSError):
        pass  # no such user here (not the image): nothing to hand over to
