"""Stored JSON text, read strictly: the one parser of every value the layouts read, and the
cheap tests that say when a text needs more care.

Safety design: a value is parsed as JSON and nothing else, and text PostgreSQL could not
store (invalid UTF-8, lone surrogates) is refused here: `parse_json` raises
`MalformedCheckpoint`, and the caller quarantines the raw value. Integers beyond 64 bits keep
every digit (orjson would turn them into floats).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from conversations.exceptions import MalformedCheckpoint

# orjson reads integers outside 64 bits as floats (so does -2**63 - 1, 19 digits); where
# such a number may be present, the standard library (exact, slower) reads the document
# instead. Looking for one must cost less than the parse: a regular expression over the
# document took longer than orjson itself, so digit runs are found with translate + find.
# LangGraph's channel versions are 32-digit strings: a run only counts when it starts a
# number token (after `:`, `,` or `[`, whitespace and a minus sign allowed).
_DIGIT_MAP = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # digits to "0", the rest to " "
_LONG_RUN = b"0" * 19


def _may_hold_long_integer(data: bytes) -> bool:
    runs = data.translate(_DIGIT_MAP)
    start = runs.find(_LONG_RUN)
    while start != -1:
        i = start - 1
        if i >= 0 and data[i] == 45:  # "-"
            i -= 1
        while i >= 0 and data[i] in b" \t\n\r":
            i -= 1
        if i < 0 or data[i] in b":,[":
            return True
        end = runs.find(b" ", start)
        if end == -1:
            return False
        start = runs.find(_LONG_RUN, end)
    return False


def parse_json(raw: bytes | str, what: str) -> Any:
    """Parse stored JSON, strictly: invalid UTF-8 and lone surrogates are refused."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        if _may_hold_long_integer(data):
            return json.loads(data.decode("utf-8"))
        return orjson.loads(data)
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: nesting too deep for json.loads
        raise MalformedCheckpoint(f"{what} is not JSON: {exc}") from None


def may_hold_nul(raw: bytes | None) -> bool:
    """Whether a JSON text may decode to a NUL character (cheap test before the exact walk)."""
    return raw is not None and b"\\u0000" in raw
