"""Reading the deployment's configuration from environment variables.

Kept apart from settings.py so the parsing can be tested without reloading settings.
Every error names the variable to fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}

# SQLAlchemy-style driver suffixes that bots' .env files carry; Django picks its own driver.
POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgres+asyncpg",
    "postgres+psycopg",
}
# asyncpg spells libpq's sslmode as ssl=...
ASYNCPG_SSL = {"true": "require", "1": "require", "false": "disable", "0": "disable"}


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a yes/no value; use 1/0, true/false, yes/no or on/off.")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number, within bounds when given (the same bounds as the commands' flags)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}.")
    return value


# What the environment may set in settings.ARCHIVER: (key, variable, kind, bounds). A variable
# that is unset, or empty for a number or a path, leaves the default of conversations/conf.py,
# the one place defaults are written. The bounds are the commands' own (--cutoff-hours,
# --batch-size, --months).
ARCHIVER_VARIABLES: list[tuple[str, str, str, dict[str, int]]] = [
    ("REDIS_URL", "REDIS_URL", "path", {}),
    ("HEALTH_FILE", "ARCHIVER_HEALTH_FILE", "path", {}),
    ("METRICS_TEXTFILE", "ARCHIVER_METRICS_TEXTFILE", "text", {}),  # empty: no textfile
    ("METRICS_TOKEN", "ARCHIVER_METRICS_TOKEN", "text", {}),
    ("CUTOFF_HOURS", "ARCHIVER_CUTOFF_HOURS", "int", {"minimum": 0}),
    ("TTL_BUFFER_MINUTES", "ARCHIVER_TTL_BUFFER_MINUTES", "int", {"minimum": 1}),
    ("MIRROR_LIVE", "ARCHIVER_MIRROR_LIVE", "bool", {}),
    ("BATCH_SIZE", "ARCHIVER_BATCH_SIZE", "int", {"minimum": 1}),
    ("WRITERS", "ARCHIVER_WRITERS", "int", {"minimum": 1}),
    ("RETRY_ATTEMPTS", "ARCHIVER_RETRY_ATTEMPTS", "int", {"minimum": 1}),
    ("RETRY_DELAY_SECONDS", "ARCHIVER_RETRY_DELAY_SECONDS", "int", {"minimum": 0}),
    ("RETENTION_MONTHS", "ARCHIVER_RETENTION_MONTHS", "int", {"minimum": 1, "maximum": 1200}),
    ("LOCK_WAIT_SECONDS", "ARCHIVER_LOCK_WAIT_SECONDS", "int", {"minimum": 0}),
    ("HEALTH_MAX_AGE_MINUTES", "ARCHIVER_HEALTH_MAX_AGE_MINUTES", "int", {}),
]


def archiver_from_env() -> dict[str, Any]:
    """The ARCHIVER settings the environment sets, checked as the matching flags are."""
    found: dict[str, Any] = {}
    for key, name, kind, bounds in ARCHIVER_VARIABLES:
        raw = os.environ.get(name)
        if raw is None or (kind in ("int", "path") and not raw.strip()):
            continue  # an empty text is a value ("" turns the metrics file off); empty yes/no is no
        if kind in ("text", "path"):
            found[key] = raw.strip()
        elif kind == "bool":
            found[key] = env_bool(name)
        else:
            found[key] = env_int(name, 0, **bounds)
    return found


def normalise_database_url(url: str) -> str:
    """Return `url` with a driver suffix (`postgresql+asyncpg://`) reduced to `postgresql://`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in POSTGRES_SCHEMES:
        return url
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "ssl":
            key, value = "sslmode", ASYNCPG_SSL.get(value.lower(), value)
        query.append((key, value))
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), parts.fragment))


def database_from_env(default_sqlite: Path) -> dict[str, Any]:
    """DATABASES['default'] from DATABASE_URL, or an SQLite file when it is unset."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(default_sqlite)}
    scheme = urlsplit(url).scheme.lower()
    if scheme not in POSTGRES_SCHEMES | {"sqlite"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL has the scheme {scheme!r}; use postgresql://user:pass@host:5432/dbname "
            "(postgres://, postgresql+asyncpg:// and postgresql+psycopg:// are accepted too) or sqlite:///path."
        )
    try:
        config = dj_database_url.parse(normalise_database_url(url), conn_max_age=60, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL cannot be parsed: {exc}") from None
    if config["ENGINE"].endswith("postgresql") and not config.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL names no database; add it after the host, as in .../dbname.")
    return dict(config)
