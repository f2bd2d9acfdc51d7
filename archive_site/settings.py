"""Settings for the conversation archiver, read from the environment.

Defaults let a newcomer start with nothing configured: an SQLite file next to manage.py,
Redis on localhost, DEBUG off. Production needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS
for the web admin; the archive commands themselves need neither.
"""

import os
from pathlib import Path

from archive_site.env import database_from_env, env_bool, env_int, env_list

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

# An empty key only matters once something signs data (the admin's sessions): Django then
# refuses with "The SECRET_KEY setting must not be empty", and wsgi.py checks it at start-up.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_crontab",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Europe/Madrid"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# The archiver's own settings; conversations/conf.py documents each key and its default.
ARCHIVER = {
    "REDIS_URL": REDIS_URL,
    "HEALTH_FILE": os.environ.get("ARCHIVER_HEALTH_FILE", "/tmp/archiver_health.json"),
    "CUTOFF_HOURS": env_int("ARCHIVER_CUTOFF_HOURS", 23),
    "TTL_BUFFER_MINUTES": env_int("ARCHIVER_TTL_BUFFER_MINUTES", 60),
    "BATCH_SIZE": env_int("ARCHIVER_BATCH_SIZE", 200),
    "RETRY_ATTEMPTS": env_int("ARCHIVER_RETRY_ATTEMPTS", 2),
    "RETRY_DELAY_SECONDS": env_int("ARCHIVER_RETRY_DELAY_SECONDS", 5),
    "RETENTION_MONTHS": env_int("ARCHIVER_RETENTION_MONTHS", 6),
}

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "conversations": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
