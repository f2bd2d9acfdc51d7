"""Settings for the tests: the project's own, against this machine's PostgreSQL unless
DATABASE_URL says otherwise (pytest-django creates and drops its own test database)."""

import os

os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")

from archive_site.settings import *  # noqa: E402,F401,F403
