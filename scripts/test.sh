#!/usr/bin/env bash
# Run the test suite against this machine's PostgreSQL (DATABASE_URL, default
# postgresql://postgres@127.0.0.1:5432/test) and Redis (127.0.0.1:6379); the Redis server
# with the JSON and search modules that the real LangGraph savers need is started by the
# tests themselves (scripts/start-redis-stack.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
.venv/bin/python -m pytest "$@"
