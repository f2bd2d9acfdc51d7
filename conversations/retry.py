"""Database errors: which are worth another attempt, and which are the data's own.

Safety design: a batch's transaction is retried RETRY_ATTEMPTS times, RETRY_DELAY_SECONDS
apart, on a fresh connection each time, only for errors of the connection or the server. An
error caused by the rows themselves (a value the database refuses, a program limit) is not
retried: the caller writes the batch's conversations one by one and quarantines the one
that cannot be stored, so one bad value never blocks the others run after run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, connection
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from conversations import conf

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors worth another attempt: the connection or the server, not the data.
RETRYABLE = (OperationalError, InterfaceError)
# Values that cannot be stored, found only while the rows are formatted or sent: text with a
# lone surrogate (read from JSON, or a key name that is not UTF-8), JSON nested deeper than
# orjson writes (255) or json.dumps recurses. Like a row the database refused, they quarantine
# their own conversation instead of failing the batch on every run.
UNSTORABLE = (UnicodeError, orjson.JSONEncodeError, RecursionError)
# SQLSTATE class 54, "program limit exceeded": a value too big for an index entry (a 3 kB id)
# or for the content search's tsvector (megabytes of distinct words). Data, not the server.
PROGRAM_LIMIT_EXCEEDED = "54"


def with_retry(action: Callable[[], T], what: str) -> T:
    """Run a database action with the configured attempts; between them, drop the
    connection so the next attempt starts on a fresh one."""

    def before_sleep(state: Any) -> None:
        logger.warning(
            "Database error while %s (attempt %d of %d): %s; retrying in %ss",
            what,
            state.attempt_number,
            conf.retry_attempts(),
            state.outcome.exception(),
            conf.retry_delay_seconds(),
        )
        connection.close()

    retrying = Retrying(
        stop=stop_after_attempt(conf.retry_attempts()),
        wait=wait_fixed(conf.retry_delay_seconds()),
        retry=retry_if_exception(lambda exc: isinstance(exc, RETRYABLE) and not is_data_error(exc)),
        before_sleep=before_sleep,
        sleep=lambda seconds: pause(seconds),
        reraise=True,
    )
    return retrying(action)


def pause(seconds: float) -> None:
    """The wait between attempts (a seam for tests)."""
    time.sleep(seconds)


def is_data_error(exc: BaseException) -> bool:
    """An error caused by the rows themselves, as opposed to the server or the schema."""
    if isinstance(exc, (DataError, IntegrityError, *UNSTORABLE)):
        return True
    return str(getattr(exc.__cause__, "sqlstate", "") or "").startswith(PROGRAM_LIMIT_EXCEEDED)
