#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

A setting that cannot be used, or a database that cannot be reached or has no schema, ends
any command with one line saying what to fix and exit status 1, not a traceback (which
`--traceback` still shows)."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archive_site.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import OperationalError, ProgrammingError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        if "--traceback" in sys.argv:
            raise
        sys.exit(f"Configuration error: {exc}")
    except (OperationalError, ProgrammingError) as exc:
        if "--traceback" in sys.argv:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (has `python manage.py migrate` been run?)" if isinstance(exc, ProgrammingError) else " (check DATABASE_URL)"
        sys.exit(f"Database error: {first}{hint}")


if __name__ == "__main__":
    main()
