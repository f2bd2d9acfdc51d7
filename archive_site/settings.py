"""Settings for the conversation archiver, read from the environment.

Defaults let a newcomer start with nothing configured: an SQLite file next to manage.py,
Redis on localhost, DEBUG off. Production needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS
for the web admin; the archive commands themselves need neither.
"""

import os
import shlex
import sys
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from archive_site.env import archiver_from_env, database_from_env, env_bool, env_int, env_list

# Django's generic classes (ModelAdmin[Model], QuerySet[Model], Paginator[Row]) accept the type
# arguments the type checker reads; this lets them be written in class bases too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

# An empty key only matters once something signs data (the admin's sessions): Django then
# refuses with "The SECRET_KEY setting must not be empty", and wsgi.py checks it at start-up.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# The admin behind a TLS proxy (docs/operations.md, "Behind a TLS proxy"). Off by default, so
# that plain http://127.0.0.1:8000 works out of the box; the production values are in
# .env.example, and `manage.py check --deploy` is clean with them.
# The proxy says the request came over HTTPS with X-Forwarded-Proto: https. Only set this when
# the proxy always sets (or strips) that header, or clients could claim HTTPS themselves.
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Session and CSRF cookies only over HTTPS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
# Redirect plain HTTP to HTTPS (the proxy's health checks and Prometheus may still use
# /metrics over HTTP inside the network).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
# Strict-Transport-Security: browsers use HTTPS only, for this long (0: not sent). Start low
# (3600), raise to a year (31536000) once HTTPS works everywhere.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# A support session ends after this many minutes (Django's default is two weeks), and when
# the browser closes.
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_MINUTES", 480, minimum=5) * 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_crontab",
    "axes",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "conversations.middleware.RejectNulBytes",
    # Serves the admin's static files from STATIC_ROOT under gunicorn (no separate web server).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Login throttling (django-axes): last, as its documentation asks.
    "axes.middleware.AxesMiddleware",
]

# Login throttling for the admin (django-axes): after ARCHIVER_LOGIN_FAILURE_LIMIT wrong
# passwords for one user from one address, that pair is locked out for
# ARCHIVER_LOGIN_COOLOFF_MINUTES (a 429 page); a successful login resets the count. Behind a
# proxy, set ARCHIVER_LOGIN_PROXY_COUNT to the number of proxies in front of the web service,
# so the address is the client's (X-Forwarded-For), not the proxy's.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ARCHIVER_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ARCHIVER_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/login_locked.html"
AXES_VERBOSE = False
_proxies = env_int("ARCHIVER_LOGIN_PROXY_COUNT", 0, minimum=0)
if _proxies:
    AXES_IPWARE_PROXY_COUNT = _proxies
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

ROOT_URLCONF = "archive_site.urls"
WSGI_APPLICATION = "archive_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_env(BASE_DIR / "db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


LANGUAGE_CODE = "en-us"
TIME_ZONE = "Europe/Madrid"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Compressed copies for whitenoise. Not the manifest (hashed-name) variant: that one makes every
# {% static %} fail until collectstatic has run, which would break tests that render the admin.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The archiver's own settings: conversations/conf.py holds each key's default; the environment
# overrides what it sets (archive_site/env.py lists the variables and their bounds).
ARCHIVER = archiver_from_env()

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL={os.environ['LOG_LEVEL']!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The thread: batches are stored by several writer threads at once (ARCHIVER_WRITERS).
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "conversations": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Every server error of the web service, with its traceback, and every refused request.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "django.security": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "axes": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# ============================================================================================
# Scheduling (django-crontab): the crontab that docker/entrypoint.sh installs in the archiver
# container. Keep this block last.
#
# cron starts a job with an almost empty environment and cuts a crontab line at every "%", so
# no setting value is ever written into a line. Each line runs docker/cron-job.sh, which first
# sends the job's output to the container's stdout/stderr, then restores the container's
# environment from ARCHIVER_CRON_ENV_FILE (written by the entrypoint, every value shell-quoted,
# mode 600) and drops root for ARCHIVER_CRON_USER. django-crontab only logs a job's exception
# and exits 0, and "crontab add" exits 0 even when no crontab was installed: the entrypoint
# checks "crontab -l" afterwards, and the health file is what monitoring watches.
# ============================================================================================
ARCHIVE_SCHEDULES = {"60": "0 * * * *", "30": "*/30 * * * *", "15": "*/15 * * * *"}
_schedule_minutes = os.environ.get("ARCHIVER_SCHEDULE_MINUTES", "").strip() or "60"
if _schedule_minutes not in ARCHIVE_SCHEDULES:
    raise ImproperlyConfigured(
        f"ARCHIVER_SCHEDULE_MINUTES={_schedule_minutes!r} is not supported; use 60 (hourly at :00), "
        "30 (at :00 and :30) or 15 (every quarter hour)."
    )
ARCHIVER["SCHEDULE_MINUTES"] = int(_schedule_minutes)

CRONJOBS = [
    (ARCHIVE_SCHEDULES[_schedule_minutes], "django.core.management.call_command", ["archive_checkpoints"]),
    # Daily at a quiet hour of the container's time zone (TZ=Europe/Madrid in the image); 03:30
    # happens exactly once on both daylight-saving change days. purge_history's own default
    # decides how much is kept.
    ("30 3 * * *", "django.core.management.call_command", ["purge_history"]),
]
CRONTAB_COMMAND_PREFIX = " ".join(
    shlex.quote(str(part))
    for part in (
        BASE_DIR / "docker" / "cron-job.sh",
        os.environ.get("ARCHIVER_CRON_ENV_FILE", "").strip() or BASE_DIR / ".cron-env",
    )
)
CRONTAB_DJANGO_MANAGE_PATH = str(BASE_DIR / "manage.py")
CRONTAB_DJANGO_PROJECT_NAME = "archive_site"  # names the jobs' comment, whatever the settings module
CRONTAB_EXECUTABLE = "crontab"  # looked up on PATH (the tests put a stand-in first)
# No CRONTAB_DJANGO_SETTINGS_MODULE: a job uses the DJANGO_SETTINGS_MODULE of the restored
# environment, or manage.py's default.
for _name, _value in (
    ("the app folder or ARCHIVER_CRON_ENV_FILE", CRONTAB_COMMAND_PREFIX),
    ("the Python path", sys.executable),
):
    if "%" in _value or "\n" in _value:
        raise ImproperlyConfigured(
            f"{_name} ({_value!r}) holds '%' or a newline, which cron cannot take in a crontab line."
        )
