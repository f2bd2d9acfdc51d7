"""The run lock: one Redis key that keeps archive runs, purges and erasures apart.

Safety design:
- The lock expires LOCK_TIMEOUT_SECONDS after its holder last renewed it, so a killed holder
  blocks the others only briefly; holders renew it after every batch.
- Its value names the holder ("archive:", "purge:", "erase:" and a random token), and only the
  holder's own token can renew or release it.
- An archive run that finds another archive run holding it exits at once (the next one comes
  within the hour). One that finds a purge or an erasure waits for it, up to LOCK_WAIT_SECONDS,
  because skipping a run could let conversations expire; they hold it for short work.
- A purge or an erasure waits for the holder, up to LOCK_WAIT_SECONDS: an archive run stores
  a batch's messages and its conversation records in one transaction, and the purge's
  recount or the erasure must not interleave with it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from conversations import conf
from conversations.checkpoints.client import redis_errors
from conversations.exceptions import LockLost, RedisUnavailable, RunInProgress

logger = logging.getLogger(__name__)

ARCHIVE, PURGE, ERASE = "archive", "purge", "erase"
# What each holder is called in messages.
DOING = {ARCHIVE: "archive_checkpoints", PURGE: "purge_history", ERASE: "erase_customer"}


def holder_of(client: redis.Redis) -> str | None:
    """Who holds the lock now (ARCHIVE, PURGE or ERASE), or None. A lock written by an older
    version (a bare token) counts as an archive run's."""
    with redis_errors():
        value = client.get(conf.lock_key())
    if value is None:
        return None
    text = value if isinstance(value, str) else value.decode(errors="replace")
    kind = text.partition(":")[0]
    return kind if kind in DOING else ARCHIVE


@contextmanager
def run_lock(client: redis.Redis, holder: str = ARCHIVE, *, skip: bool = False) -> Iterator[Callable[[], None]]:
    """Hold the run lock as `holder`; yields a function that renews it (call it after every
    batch). Raises RunInProgress when it cannot be had (see the module's rules)."""
    if skip:
        yield lambda: None
        return
    timeout = conf.lock_timeout_seconds()
    lock = client.lock(conf.lock_key(), timeout=timeout)
    token = f"{holder}:{uuid.uuid4().hex}"
    with redis_errors():
        if not lock.acquire(blocking=False, token=token):
            _wait(client, lock, holder, token)

    def renew() -> None:
        try:
            with redis_errors():
                lock.reacquire()
        except redis.exceptions.LockNotOwnedError:
            raise LockLost(
                f"The run lock {conf.lock_key()!r} was lost while {DOING[holder]} held it (it expired, or something "
                "deleted it); stopping. What is committed stays committed: run it again."
            ) from None

    try:
        yield renew
    finally:
        try:
            with redis_errors():
                lock.release()
        except (redis.exceptions.LockError, RedisUnavailable):
            pass


def _wait(client: redis.Redis, lock: redis.lock.Lock, holder: str, token: str) -> None:
    """Wait for the lock as the module's rules say, or raise RunInProgress."""
    current = holder_of(client) or ARCHIVE
    key, wait = conf.lock_key(), conf.lock_wait_seconds()
    if holder == ARCHIVE and current == ARCHIVE:
        raise RunInProgress(
            f"Another archival run is in progress (lock {key!r}); exiting. "
            f"A run that died frees it within {conf.lock_timeout_seconds()}s."
        )
    logger.info("Waiting up to %ss for %s to release the run lock %r", wait, DOING[current], key)
    if lock.acquire(blocking=True, blocking_timeout=wait, token=token):
        return
    raise RunInProgress(
        f"Waited {wait}s for {DOING[holder_of(client) or current]} to release the run lock {key!r}; "
        f"run {DOING[holder]} again later (ARCHIVER_LOCK_WAIT_SECONDS sets the wait)."
    )
