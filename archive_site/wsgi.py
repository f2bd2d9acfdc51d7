"""WSGI entry point for the support admin.

Refuses to start without the settings a public server needs, naming the variable to set.
"""

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archive_site.settings")

if not settings.DEBUG:
    try:
        settings.SECRET_KEY  # Django refuses an empty one here, without naming the variable
    except ImproperlyConfigured:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set; the admin cannot start without it.") from None
    if not settings.ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is not set; list the host names the admin is served on.")

application = get_wsgi_application()
