"""How the support views show a value: times in the site's zone, text as it is stored, JSON
indented, bytes as text or hex, and the admin columns built from these.

Safety design: everything here returns text, and the columns put it through format_html,
never mark_safe, so a message or a quarantined value containing HTML is shown as text.
Characters that could make a text look like something else are shown as visible marks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

# How much of a quarantined value the page shows; the rest stays in the database.
RAW_VALUE_SHOWN_BYTES = 64 * 1024
HEX_LINE_BYTES = 16
EXCERPT_CHARS = 120
# Control characters other than tab and newlines: a value holding one is shown as hex.
CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
CONTROL_CHARACTERS = re.compile(f"[{CONTROLS}]")
# What could make a text look like something else: bidirectional controls (U+202E turns
# "gnp.exe" into "exe.png") and control characters. Shown as visible marks.
DISGUISING = re.compile(f"[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c{CONTROLS}]")


def local_time(value: datetime | None) -> str:
    """A time in the site's zone (settings.TIME_ZONE, Europe/Madrid), with the zone named."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def local_time_column(field: str, description: str, sortable: bool = False) -> Any:
    """An admin column showing a time field in the site's zone, optionally sortable by it."""

    @admin.display(description=description, ordering=field if sortable else None)
    def column(model_admin: admin.ModelAdmin[Any], obj: Any) -> str:
        return local_time(getattr(obj, field))

    return column


def text_column(
    field: str, description: str, show: Callable[[Any], str] = str, css_class: str = "", empty: str | None = "-"
) -> Any:
    """An admin column showing a field through `show` as preformatted text; an empty field
    shows `empty`, or an empty block when `empty` is None."""
    template = f'<pre class="{css_class}">{{}}</pre>' if css_class else "<pre>{}</pre>"

    @admin.display(description=description)
    def column(model_admin: admin.ModelAdmin[Any], obj: Any) -> str:
        value = getattr(obj, field)
        if not value and empty is not None:
            return empty
        return format_html(template, show(value))

    return column


def visible(text: str) -> str:
    """The text with every bidirectional control and control character shown as a mark
    (⟨U+202E⟩), so it reads as it is stored; newlines and tabs stay."""
    return DISGUISING.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def shorten(text: str) -> str:
    """At most EXCERPT_CHARS characters, the last an ellipsis when the text was cut."""
    return text[: EXCERPT_CHARS - 1] + "…" if len(text) > EXCERPT_CHARS else text


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def describe_raw_value(raw: bytes | memoryview | None) -> tuple[str, str]:
    """(what it is, how to show it): printable UTF-8 as text, anything else as a hex dump;
    at most RAW_VALUE_SHOWN_BYTES of it. The caller escapes both."""
    data = bytes(raw or b"")
    shown = data[:RAW_VALUE_SHOWN_BYTES]
    cut = f", first {len(shown):,} shown" if len(shown) < len(data) else ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _readable(text):
        if cut:
            text = shown.decode("utf-8", errors="ignore")
        return f"UTF-8 text, {len(data):,} bytes{cut}", text
    return f"binary, {len(data):,} bytes{cut}, as hex", hex_dump(shown)


def _readable(text: str) -> bool:
    return CONTROL_CHARACTERS.search(text) is None


def hex_dump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), HEX_LINE_BYTES):
        chunk = data[offset : offset + HEX_LINE_BYTES]
        ascii_part = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<{HEX_LINE_BYTES * 3 - 1}}  |{ascii_part}|")
    return "\n".join(lines)
