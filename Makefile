# The two commands the README promises, on a fresh machine.
.PHONY: archive demo test setup setup-runtime

setup-runtime:
	scripts/setup.sh --runtime

setup:
	scripts/setup.sh

# Set up, then archive once (SQLite next to manage.py unless DATABASE_URL is set).
archive: setup-runtime
	.venv/bin/python manage.py archive_checkpoints

# Nothing running needed: its own Redis, bots, SQLite archive and admin (scripts/demo.py);
# Ctrl-C stops it.
demo: setup
	.venv/bin/python scripts/demo.py

# Set up with the test requirements, then run every test.
test: setup
	scripts/test.sh
