"""The purge's export: rows older than the cutoff as JSON Lines, optionally gzipped.

Safety design: the file is written under a temporary name in the target folder, read back and
counted, synced, and only then renamed to the name asked for; retention.py deletes exactly
the ids read back from it. Any failure raises RetentionError before anything is deleted.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.core.serializers.json import DjangoJSONEncoder

from conversations.exceptions import RetentionError
from conversations.models import ConversationHistory

logger = logging.getLogger(__name__)

EXPORT_CHUNK = 5000
EXPORT_FIELDS = [f.attname for f in ConversationHistory._meta.concrete_fields]


def check_writable(path: Path) -> None:
    if path.exists():
        raise RetentionError(f"--export {path}: the file exists already; choose a new name so nothing is overwritten.")
    if not path.parent.is_dir():
        raise RetentionError(f"--export {path}: the folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK):
        raise RetentionError(f"--export {path}: the folder {path.parent} is not writable.")


def _open(path: Path, mode: str, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def export_rows(cutoff: datetime, path: Path) -> int:
    """Write every row older than the cutoff as JSON Lines, then read the file back and count it.
    The file appears under its name only when it is complete and checked."""
    gz = path.name.endswith(".gz")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        written = 0
        with _open(tmp, "w", gz) as out:
            for row in _rows_older_than(cutoff):
                out.write(json.dumps(row, cls=DjangoJSONEncoder, ensure_ascii=False))
                out.write("\n")
                written += 1
            out.flush()
        read_back = sum(1 for _ in exported_ids(tmp, gz))
        if read_back != written:
            raise RetentionError(f"--export {path}: wrote {written} rows but read back {read_back}; nothing was deleted.")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise RetentionError(f"--export {path}: {exc.strerror or exc}; nothing was deleted.") from None
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("Exported %d messages to %s", written, path)
    return written


def _rows_older_than(cutoff: datetime) -> Iterator[dict[str, Any]]:
    """Rows by keyset on the primary key, a chunk per query (never OFFSET)."""
    last = 0
    while True:
        chunk = list(
            ConversationHistory.objects.filter(timestamp__lt=cutoff, pk__gt=last).order_by("pk").values(*EXPORT_FIELDS)[:EXPORT_CHUNK]
        )
        if not chunk:
            return
        yield from chunk
        last = chunk[-1]["id"]


def exported_ids(path: Path, gz: bool) -> Iterator[int]:
    with _open(path, "r", gz) as handle:
        for line in handle:
            yield int(json.loads(line)["id"])
