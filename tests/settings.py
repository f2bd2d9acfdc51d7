"""Settings for the tests: the project's own, against this machine's PostgreSQL unless
DATABASE_URL says otherwise (pytest-django creates and drops its own test database)."""

import os

os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")

from archive_site.settings import *  # noqa: E402,F401,F403

# Lets several test runs share this machine's servers: each names its own test database
# (and its own Redis database and port through TEST_REDIS_URL and TEST_STACK_PORT).
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}  # noqa: F405

# The tests serve the admin's static files from the apps' own folders, as runserver does, not
# from the collectstatic output that only the image builds (STATIC_ROOT is empty here).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
