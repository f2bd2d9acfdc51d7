"""Configuration from the environment: database URLs as bots' .env files spell them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from archive_site.env import database_from_env, env_bool, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bot:s3cr%40t@data:5432/archive",
        "postgres://bot:s3cr%40t@data:5432/archive",
        "postgresql+asyncpg://bot:s3cr%40t@data:5432/archive",
        "postgresql+psycopg://bot:s3cr%40t@data:5432/archive",
    ],
)
def test_every_postgres_spelling_gives_the_same_database(monkeypatch, url):
    monkeypatch.setenv("DATABASE_URL", url)
    config = database_from_env(Path("/unused"))
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "archive", "bot", "s3cr@t", "data", 5432
    )


def test_asyncpg_ssl_parameter_becomes_sslmode():
    assert normalise_database_url("postgresql+asyncpg://u@h/db?ssl=require") == "postgresql://u@h/db?sslmode=require"


def test_unset_database_url_means_the_embedded_sqlite_file(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert database_from_env(tmp_path / "db.sqlite3") == {
        "ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite3")
    }


@pytest.mark.parametrize("url, message", [("mysql://u@h/db", "scheme 'mysql'"), ("postgresql://u@h:5432", "names no database")])
def test_unusable_database_urls_say_what_to_fix(monkeypatch, url, message):
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ImproperlyConfigured, match=message):
        database_from_env(Path("/unused"))


def test_yes_no_values(monkeypatch):
    monkeypatch.setenv("X", "yes")
    assert env_bool("X") is True
    monkeypatch.setenv("X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X='maybe' is not a yes/no value"):
        env_bool("X")


def _wsgi(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "-c", "import archive_site.wsgi"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def test_the_web_server_refuses_to_start_without_a_secret_key():
    result = _wsgi({"DJANGO_ALLOWED_HOSTS": "admin.example.com"})
    assert result.returncode != 0 and "DJANGO_SECRET_KEY is not set" in result.stderr


def test_the_web_server_refuses_to_start_without_allowed_hosts():
    result = _wsgi({"DJANGO_SECRET_KEY": "x" * 50})
    assert result.returncode != 0 and "DJANGO_ALLOWED_HOSTS is not set" in result.stderr


def test_the_web_server_starts_with_production_settings():
    result = _wsgi({"DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "admin.example.com"})
    assert result.returncode == 0, result.stderr


def test_the_environment_sets_only_what_it_names_and_conf_keeps_every_default(monkeypatch):
    from archive_site.env import ARCHIVER_VARIABLES, archiver_from_env
    from conversations import conf

    for _, name, _, _ in ARCHIVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert archiver_from_env() == {}
    assert {key for key, _, _, _ in ARCHIVER_VARIABLES} <= set(conf.DEFAULTS)  # one place for defaults
    monkeypatch.setenv("ARCHIVER_BATCH_SIZE", "50")
    monkeypatch.setenv("ARCHIVER_METRICS_TEXTFILE", "")  # empty: no textfile
    monkeypatch.setenv("ARCHIVER_CUTOFF_HOURS", " ")  # empty number: the default
    monkeypatch.setenv("ARCHIVER_MIRROR_LIVE", "off")
    assert archiver_from_env() == {"BATCH_SIZE": 50, "METRICS_TEXTFILE": "", "MIRROR_LIVE": False}
    monkeypatch.setenv("ARCHIVER_WRITERS", "0")
    with pytest.raises(ImproperlyConfigured, match="ARCHIVER_WRITERS must be at least 1, not 0"):
        archiver_from_env()


def test_every_default_has_a_typed_reader_of_its_type(settings):
    """conf.py's functions read each key with the type of its default, and an override of the
    wrong type is refused with the key's name, not carried into a run."""
    from conversations import conf

    readers = {name.upper(): getattr(conf, name) for name in dir(conf) if name.upper() in conf.DEFAULTS}
    field_keys = {"MESSAGES_FIELD", "SUMMARY_FIELD", "CONVERSATION_ID_FIELDS", "CUSTOMER_ID_FIELDS"}
    assert set(readers) | field_keys == set(conf.DEFAULTS)  # conf.fields() reads the other four
    settings.ARCHIVER = {}
    for key, read in readers.items():
        default = conf.DEFAULTS[key]
        assert read() == (default if not isinstance(default, list) else tuple(default)), key
    settings.ARCHIVER = {"BATCH_SIZE": "200"}
    with pytest.raises(ImproperlyConfigured, match=r"ARCHIVER\['BATCH_SIZE'\] is '200'; it must be a whole number"):
        conf.batch_size()
    settings.ARCHIVER = {"RETRY_DELAY_SECONDS": 5}
    assert f"{conf.retry_delay_seconds()}s" == "5s"  # an int stays an int in messages
