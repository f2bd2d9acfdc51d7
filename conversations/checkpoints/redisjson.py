"""Small helpers over RedisJSON and RediSearch answers, shared by the layouts.

Everything here reads; nothing writes or deletes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis

from conversations.exceptions import ArchiverError

logger = logging.getLogger(__name__)

SEARCH_PAGE = 1000

Found = list[tuple[str, dict[str, str]]]  # (key, returned fields)


def decode(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def ttl_seconds(pttl: Any) -> float | None:
    """PTTL's answer as seconds; None for a key without expiry (-1) or on an error."""
    if isinstance(pttl, int) and pttl >= 0:
        return pttl / 1000
    return None


def read_with_pttl(client: redis.Redis, keys: list[str], command: str, *args: str) -> list[tuple[str, Any, Any]]:
    """Each key with its answer to `command` (GET, or JSON.GET of the paths `args`) and its
    PTTL, all in one pipeline; an error is the answer, not raised."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command(command, key, *args)
        pipe.pttl(key)
    replies = pipe.execute(raise_on_error=False)
    return [(key, replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)]


def json_paths(raw: Any, paths: tuple[str, ...] | list[str] = ()) -> dict[str, list[Any]] | None:
    """The answer of a JSON.GET of several `paths` as {path: [matches]}; None when the key is
    missing. (Asked for one path, RedisJSON answers the list of matches alone: give `paths`
    to have it in the same shape.)"""
    if raw is None or isinstance(raw, Exception):
        return None
    value = orjson.loads(raw)
    if len(paths) == 1 and isinstance(value, list):
        return {paths[0]: value}
    return value if isinstance(value, dict) else None


def first(paths: dict[str, list[Any]] | None, *names: str) -> Any:
    for name in names:
        matches = (paths or {}).get(name) or []
        if matches and matches[0] is not None:
            return matches[0]
    return None


def raw_value(client: redis.Redis, key: str) -> tuple[str, bytes]:
    """A key's type and its value as bytes, for quarantine: GET, JSON.GET, or DUMP for the rest."""
    kind = decode(client.type(key)) or "none"
    if kind == "string":
        value = client.get(key)
        return kind, encode(value) if isinstance(value, str) else value or b""  # bytes: the client decodes nothing
    if kind == "ReJSON-RL":
        return kind, client.execute_command("JSON.GET", key) or b""
    return kind, client.dump(key) or b""


_TAG_SPECIAL = re.compile(r"([^\w\u0080-\U0010ffff])")


def escape_tag(value: str) -> str:
    """Escape a value for a RediSearch TAG query such as @thread_id:{...}."""
    return _TAG_SPECIAL.sub(r"\\\1", value)


def thread_query(thread: str) -> str:
    return "@thread_id:{%s}" % escape_tag(thread)


def index_name(client: redis.Redis, prefix: str) -> str:
    """The saver's search index over the keys that start with `prefix`: named after the prefix
    since langgraph-checkpoint-redis 0.3.0 (`checkpoint`, `checkpoint_write`), with an "s"
    before (`checkpoints`, `checkpoint_writes`). After an upgrade both exist and both list
    every document. Raises ArchiverError, one line, when neither does."""
    names = {decode(n) for n in client.execute_command("FT._LIST")}
    for name in (prefix, prefix + "s"):
        if name in names:
            return name
    raise ArchiverError(
        f"Redis has no search index {prefix!r} (nor {prefix + 's'!r}), which langgraph-checkpoint-redis "
        "creates in its setup(); check REDIS_URL and the ARCHIVER key prefixes."
    )


def _search_page(reply: Any) -> tuple[int, Found]:
    found: Found = []
    if isinstance(reply, dict):  # RESP3
        for result in reply[b"results"]:
            fields = result.get(b"extra_attributes") or {}
            found.append((decode(result[b"id"]) or "", {decode(k) or "": decode(v) or "" for k, v in fields.items()}))
        return reply[b"total_results"], found
    items, i = reply[1:], 0
    while i < len(items):
        key, fields = decode(items[i]) or "", {}
        if i + 1 < len(items) and isinstance(items[i + 1], list):
            pairs = items[i + 1]
            fields = {decode(pairs[j]) or "": decode(pairs[j + 1]) or "" for j in range(0, len(pairs) - 1, 2)}
            i += 1
        found.append((key, fields))
        i += 1
    return reply[0], found


def search_many(client: redis.Redis, index: str, queries: list[str], fields: tuple[str, ...] = ()) -> list[Found | None]:
    """What each FT.SEARCH query matches: (key, {field: value}) for the `fields` asked for, or
    None for a query the index refuses: RediSearch cannot parse the tags of some thread ids the
    savers accept (empty, "_", control characters), and one such thread must not stop the run.
    First pages in one pipeline; the rare longer results paged one by one."""
    shape = ["RETURN", len(fields), *fields] if fields else ["NOCONTENT"]

    def page(target: Any, query: str, offset: int) -> Any:
        return target.execute_command("FT.SEARCH", index, query, *shape, "LIMIT", offset, SEARCH_PAGE, "DIALECT", 2)

    return _searched(client, index, queries, page, _search_page, SEARCH_PAGE)


JsonFound = list[tuple[str, dict[str, list[Any]]]]  # (key, {name: the matches of its path})


def search_json(
    client: redis.Redis,
    index: str,
    queries: list[str],
    returns: tuple[tuple[str, str], ...],
    page: int,
    convert: dict[str, Callable[[list[Any]], Any]] | None = None,
) -> list[JsonFound | None]:
    """What each FT.SEARCH query matches, with the matches of each (name, JSONPath) of `returns`
    as lists (DIALECT 3 answers every match, not only the first), `page` documents a command:
    a checkpoint's message ids come with the search that lists it, not one command each. None
    for a query the index refuses (see search_many). First pages in one pipeline. `convert`
    turns a field's matches into what is kept, page by page (so a batch's many message ids
    need not all be held as parsed)."""
    shape = ["RETURN", 3 * len(returns), *(part for name, path in returns for part in (path, "AS", name))]

    def ask(target: Any, query: str, offset: int) -> Any:
        return target.execute_command("FT.SEARCH", index, query, *shape, "LIMIT", offset, page, "DIALECT", 3)

    return _searched(client, index, queries, ask, lambda reply: _json_page(reply, convert or {}), page)


Match = TypeVar("Match")


def _searched(
    client: redis.Redis,
    index: str,
    queries: list[str],
    ask: Callable[[Any, str, int], Any],
    read: Callable[[Any], tuple[int, list[Match]]],
    size: int,
) -> list[list[Match] | None]:
    """Each query's matches, `ask`ed a page of `size` at a time (on a pipeline or the client)
    and `read` from each reply: the first pages in one pipeline, the rare longer results paged
    one by one; None for a query the index refuses, and ArchiverError when there is no index."""
    pipe = client.pipeline(transaction=False)
    for query in queries:
        ask(pipe, query, 0)
    results: list[list[Match] | None] = []
    for query, reply in zip(queries, pipe.execute(raise_on_error=False)):
        if isinstance(reply, redis.ResponseError):
            if "no such index" in str(reply).lower():
                raise ArchiverError(
                    f"Redis has no search index {index!r}, which langgraph-checkpoint-redis creates in its "
                    "setup(); check REDIS_URL and the ARCHIVER key prefixes."
                ) from None
            results.append(None)
            continue
        total, found = read(reply)
        offset = size
        while offset < total:
            total, more = read(ask(client, query, offset))
            found += more
            offset += size
            if not more:
                break
        results.append(found)
    return results


def _json_page(reply: Any, convert: dict[str, Callable[[list[Any]], Any]]) -> tuple[int, JsonFound]:
    total, found = _search_page(reply)
    parsed: JsonFound = []
    for key, fields in found:
        values: dict[str, Any] = {}
        for name, text in fields.items():
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = None
            value = value if isinstance(value, list) else []
            values[name] = convert[name](value) if name in convert else value
        parsed.append((key, values))
    return total, parsed


# What the layouts ask the search index about each document: whose it is, where and how new.
DOCUMENT_FIELDS = ("thread_id", "checkpoint_ns", "checkpoint_id")


def search_threads(client: redis.Redis, index: str, threads: list[str]) -> list[Found | None]:
    """Each thread's own documents in `index`, with DOCUMENT_FIELDS; None where the index
    cannot be asked (see search_many): the caller then leaves the thread alone.

    The savers' TAG index matches without case and splits values at commas, so a query for
    "Conv-A" also returns "conv-a"'s documents and one for "x" returns "x,y"'s: only documents
    whose thread_id is exactly the thread are kept (deleting the others lost conversations).
    """
    found = search_many(client, index, [thread_query(t) for t in threads], DOCUMENT_FIELDS)
    return [None if f is None else [(key, fields) for key, fields in f if fields.get("thread_id") == t] for t, f in zip(threads, found)]


def members(reply: Any) -> list[Any]:
    """A ZRANGE's members; none when the command failed."""
    return reply if isinstance(reply, list) else []


def only(matches: list[Any] | None) -> str:
    """The one match of a path that names a string field, as text ("" when there is none)."""
    return matches[0] if matches and isinstance(matches[0], str) else ""


def mget_matches(reply: Any, n: int) -> list[Any] | None:
    """The matches of a JSON.MGET's path in its `n`-th key; None for a key that is gone (and
    for every key if the command failed)."""
    if not isinstance(reply, list) or reply[n] is None:
        return None
    matches = orjson.loads(reply[n])
    return matches if isinstance(matches, list) else None


def runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted positions as half-open runs [a, b): the slices of an array one JSON.GET asks for."""
    found: list[tuple[int, int]] = []
    for i in indexes:
        if found and found[-1][1] == i:
            found[-1] = (found[-1][0], i + 1)
        else:
            found.append((i, i + 1))
    return found


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """`items` in lists of `size`: one pipeline each, so that a batch's replies are never all held at once."""
    return [items[i : i + size] for i in range(0, len(items), size)]
