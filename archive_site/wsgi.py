"""WSGI entry point for the support admin.

Refuses to start without the settings a public server needs, with the variable to set.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archive_site.settings")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (settings are configured by the line above)

if not settings.DEBUG:
    if not settings.SECRET_KEY:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set; the admin cannot start without it.")
    if not settings.ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is not set; list the host names the admin is served on.")
