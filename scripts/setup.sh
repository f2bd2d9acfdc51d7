#!/usr/bin/env bash
# Set up a fresh checkout: a virtualenv in .venv with the runtime and test requirements,
# and the database schema. Idempotent.
#
#   scripts/setup.sh            runtime + tests
#   scripts/setup.sh --runtime  runtime only
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--runtime" ]; then
    .venv/bin/python -m pip install --quiet -r requirements.txt
else
    .venv/bin/python -m pip install --quiet -r requirements-dev.txt
fi
.venv/bin/python manage.py migrate --noinput
