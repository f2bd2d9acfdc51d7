# The two commands the README promises, on a fresh machine.
.PHONY: archive test setup setup-runtime

setup-runtime:
	scripts/setup.sh --runtime

setup:
	scripts/setup.sh

# Set up, then archive once (SQLite next to manage.py unless DATABASE_URL is set).
archive: setup-runtime
	.venv/bin/python manage.py archive_checkpoints

# Set up with the test requirements, then run every test.
test: setup
	scripts/test.sh
