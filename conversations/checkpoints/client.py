"""The archiver's connection to the bot's Redis, and the mapping of redis-py's errors onto ours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from conversations import conf
from conversations.exceptions import RedisUnavailable

# Answers are parsed by hiredis when it is installed (requirements.txt), several times faster
# than redis-py's own parser on a batch's search results; commands are still packed by
# redis-py's own serializer, which sends a key name that is not UTF-8 back as it came
# (surrogateescape), where hiredis's packer refuses it. It keeps no state: one serves all
# connections.
COMMAND_PACKER = PythonRespSerializer(6000, Encoder("utf-8", "surrogateescape", False).encode)
CONNECT_TIMEOUT_SECONDS = 5
CLIENT_NAME = "conversation-archiver"
# Generous: one pipeline of a batch's documents can take a while on a loaded server.
READ_TIMEOUT_SECONDS = 60


# Commands a pipeline sends in one round trip. Redis runs a client's pipelined commands one
# after another, serving nobody else meanwhile: a pipeline of a batch's 200 history searches
# or 500 documents would hold the bot's own commands back for tens of milliseconds. Sent
# PIPELINE_CHUNK at a time, the bot waits behind at most that many. 16 instead of 64 made no
# difference to the bot's p99 worth its cost (runs 30-50% longer; docs/performance.md).
PIPELINE_CHUNK = 64


class _Pipeline(redis.client.Pipeline):
    """A pipeline (without MULTI) that sends its commands PIPELINE_CHUNK at a time."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, scripts = self.command_stack, self.scripts
        # Pipeline's `transaction` is a flag (the stubs see Redis.transaction(), a method).
        if self.transaction or self.explicit_transaction or len(stack) <= PIPELINE_CHUNK:  # type: ignore[truthy-function]
            return super().execute(raise_on_error)
        replies: list[Any] = []
        try:
            for start in range(0, len(stack), PIPELINE_CHUNK):
                self.command_stack, self.scripts = stack[start : start + PIPELINE_CHUNK], scripts
                replies += super().execute(raise_on_error)  # resets the pipeline after each chunk
        finally:
            self.reset()
        return replies


class _Redis(redis.Redis):
    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> _Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def connect(url: str | None = None) -> redis.Redis:
    """A client for the checkpoint Redis that answers bytes; checks the connection now."""
    url = url or conf.redis_url()
    try:
        client = _Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=READ_TIMEOUT_SECONDS,
            decode_responses=False,
            # Key names are bytes; decode() reads one that is not UTF-8 with surrogateescape, and
            # this sends it back unchanged (strict would fail the whole batch on it).
            encoding_errors="surrogateescape",
            command_packer=COMMAND_PACKER,
            protocol=2,  # the same reply shapes on every redis-py release (8.x defaults to RESP3)
            client_name=CLIENT_NAME,  # names the archiver in CLIENT LIST and SLOWLOG
        )
    except ValueError as exc:
        raise RedisUnavailable(f"REDIS_URL {masked(url)} is not a Redis URL: {exc}") from None
    with redis_errors(url):
        client.ping()
    return client


@contextmanager
def redis_errors(url: str | None = None) -> Iterator[None]:
    """Turn a lost or refused connection into RedisUnavailable, naming the server (never its password)."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(f"Redis refused the credentials in REDIS_URL {masked(url or conf.redis_url())}: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        where = masked(url or conf.redis_url())
        raise RedisUnavailable(f"Redis connection failed: {where}: {exc}") from exc


def masked(url: str | None) -> str:
    if not url:
        return "(no REDIS_URL)"
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
