#!/usr/bin/env bash
# The real deployment, end to end: build the image, run docker-compose.yml, and check what an
# operator relies on. CI runs it (.ci/run).
#
#   scripts/docker-smoke.sh
#
# On a machine that cannot reach an image registry and has no bridge network, it runs the
# production compose file with docker/compose.local.yml on top: local stand-ins for the
# upstream images (docker/local/, built from a Debian made by debootstrap), every service on
# the host's network, on ports SMOKE_PG_PORT (55432) and SMOKE_REDIS_PORT (56379); the admin
# on 127.0.0.1:8000. It installs and starts the Docker engine when missing (Debian's docker.io,
# dockerd --bridge=none --iptables=false --ip-masq=false) and stops what it started. A .env
# that exists is set aside and put back.
#
# Checks, each a FAILED line and a non-zero exit when it does not hold:
#   1. the image builds; archiver and web start; the migrations run once
#   2. a bot writes conversations through LangGraph's RedisSaver into the stack's Redis, and
#      `docker-compose exec archiver python manage.py archive_checkpoints` archives them; the
#      crontab holds the jobs with the schedule, the environment file and the user
#   3. a support user logs in to the admin on 127.0.0.1:8000 with headless Chromium and reads
#      a transcript
#   4. `restart archiver` and `down` / `up` keep every row (the volumes)
#   5. the archiver turns unhealthy while Redis is stopped, healthy after the next good run;
#      its log has the operations guide's lines
#   6. the image runs as the unprivileged user; web refuses to start without DJANGO_SECRET_KEY
set -Eeuo pipefail
cd "$(dirname "$0")/.."

PG_PORT="${SMOKE_PG_PORT:-55432}"
REDIS_PORT="${SMOKE_REDIS_PORT:-56379}"
IMAGE=conversation-archiver:latest
DEBIAN_IMAGE=archiver-local/debian:bookworm
PYTHON_IMAGE=archiver-local/python:3.12-slim-bookworm
# The CA bundle pip trusts on this machine, given to the builds as a secret (never a layer).
PIP_CA="${SMOKE_PIP_CA:-${PIP_CERT:-$(.venv/bin/python -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}}"
# The engine's own client: the newer docker CLI on PATH may lack the builder this engine has.
DOCKER="${SMOKE_DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || true)}"
COMPOSE=(.venv/bin/docker-compose -p archiver-smoke -f docker-compose.yml -f docker/compose.local.yml)
export SMOKE_PG_PORT="$PG_PORT" SMOKE_REDIS_PORT="$REDIS_PORT" DOCKER_BUILDKIT=1
started=$(date +%s)
engine_pid=""
env_backup=""

say() { printf 'docker-smoke: %s\n' "$*"; }
fail() {
    printf 'docker-smoke: FAILED: %s\n' "$*" >&2
    exit 1
}
compose() { "${COMPOSE[@]}" "$@"; }

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
        compose logs --tail=40 archiver web >&2 2>/dev/null || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    "$DOCKER" rm -f archiver-smoke-refused >/dev/null 2>&1 || true
    rm -f .env
    if [ -n "$env_backup" ]; then mv "$env_backup" .env; fi
    if [ -n "$engine_pid" ]; then
        kill "$engine_pid" 2>/dev/null || true
        wait "$engine_pid" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT

apt_install() {
    say "installing $*"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- the engine ------------------------------------------------------------------------
if [ ! -x /usr/sbin/dockerd ]; then apt_install docker.io; fi
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
if ! "$DOCKER" info >/dev/null 2>&1; then
    say "starting dockerd (no bridge network: containers use the host's)"
    dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/docker-smoke-dockerd.log 2>&1 &
    engine_pid=$!
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
    "$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not start; see /tmp/docker-smoke-dockerd.log"
fi
for port in "$PG_PORT" "$REDIS_PORT" 8000; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is taken; set SMOKE_PG_PORT / SMOKE_REDIS_PORT, or free 8000"; fi
done

# --- 1. the images ---------------------------------------------------------------------
secret=()
if [ -n "$PIP_CA" ] && [ -s "$PIP_CA" ]; then secret=(--secret "id=pip-ca,src=$PIP_CA"); fi
build() { "$DOCKER" build -q --network host "${secret[@]}" "$@" >/dev/null; }
if ! "$DOCKER" image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    mirror="$(awk '/^URIs:/ { sub(/^URIs: */, ""); print; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null)" || mirror=""
    say "making $DEBIAN_IMAGE with debootstrap from ${mirror:=http://deb.debian.org/debian}"
    root="$(mktemp -d /var/tmp/archiver-debian.XXXXXX)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >/tmp/docker-smoke-debootstrap.log 2>&1 \
        || fail "debootstrap failed; see /tmp/docker-smoke-debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | "$DOCKER" import - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$root"
fi
say "building the stand-ins for python:3.12-slim-bookworm, postgres:16 and redis-stack-server"
build -f docker/local/python.Dockerfile -t "$PYTHON_IMAGE" docker/local
build -f docker/local/postgres.Dockerfile -t archiver-local/postgres:16 docker/local
build -f docker/local/redis-stack.Dockerfile -t archiver-local/redis-stack-server:7.4.0-v2 docker/local
say "building $IMAGE"
built=$(date +%s)
build --no-cache --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" -t "$IMAGE" . || fail "the image did not build"
build_seconds=$(($(date +%s) - built))
image_mb=$(($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") / 1000000))
say "image $IMAGE: ${image_mb} MB, built in ${build_seconds}s (no cache)"

# --- the stack -------------------------------------------------------------------------
if [ -e .env ]; then env_backup="$(mktemp .env.smoke-backup.XXXXXX)" && mv .env "$env_backup"; fi
secret_key="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(40))')"
sed -e "s|^DJANGO_SECRET_KEY=.*|DJANGO_SECRET_KEY=$secret_key|" \
    -e 's|^DJANGO_ALLOWED_HOSTS=.*|DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost|' \
    -e 's|^ARCHIVER_RUN_AT_START=.*|ARCHIVER_RUN_AT_START=1|' .env.example >.env

health() { "$DOCKER" inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$1")" 2>/dev/null || echo missing; }
wait_health() {  # service, wanted status, seconds
    for _ in $(seq "$3"); do [ "$(health "$1")" = "$2" ] && return 0; sleep 1; done
    fail "$1 is $(health "$1") after $3 s, not $2"
}
wait_web() {
    for _ in $(seq 120); do
        curl -fsS -o /dev/null http://127.0.0.1:8000/admin/login/ 2>/dev/null && return 0
        sleep 1
    done
    fail "the admin does not answer on 127.0.0.1:8000"
}
rows() { compose exec -T data psql -qtA -p "$PG_PORT" -U archiver -d archive -c "SELECT count(*) FROM conversation_history"; }

say "docker-compose up"
compose up -d --no-build >/dev/null 2>&1
wait_health archiver healthy 180
wait_web
applied=$(compose logs archiver web | grep -c 'Applying conversations.0001_initial' || true)
[ "$applied" -eq 1 ] || fail "the first migration was applied $applied times, not once"
say "1. image built, archiver healthy, admin answering, migrations applied once"

# --- 2. a bot writes, the archiver archives --------------------------------------------
.venv/bin/python harness/agents.py --redis-url "redis://127.0.0.1:$REDIS_PORT/0" --saver redis --prefix smoke \
    --scenarios react,summarize --turns 4 --out /tmp/docker-smoke-bot.json >/dev/null || fail "the bot could not write to the stack's Redis"
archived="$(compose exec -T archiver python manage.py archive_checkpoints --cutoff-hours 0)" || fail "archive_checkpoints failed: $archived"
case "$archived" in "Archived 2 conversations ("*) ;; *) fail "archive_checkpoints said: $archived" ;; esac
[ "$(rows)" -gt 10 ] || fail "conversation_history holds $(rows) rows after archiving the bot's conversations"
crontab="$(compose exec -T archiver crontab -l)"
grep -q '^0 \* \* \* \* .*docker/cron-job.sh .*crontab run ' <<<"$crontab" || fail "no hourly archive job in the crontab: $crontab"
grep -q '^30 3 \* \* \* .*docker/cron-job.sh ' <<<"$crontab" || fail "no daily purge job in the crontab: $crontab"
env_file_mode="$(compose exec -T archiver stat -c '%a %U' /app/.cron-env)"
[ "$env_file_mode" = "600 root" ] || fail "the cron environment file is '$env_file_mode', not '600 root'"
job_user="$(compose exec -T -e CRON_JOB_STDOUT=/dev/stdout -e CRON_JOB_STDERR=/dev/stderr archiver /app/docker/cron-job.sh /app/.cron-env id -un)"
[ "$job_user" = app ] || fail "cron jobs run as '$job_user', not app"
job_env="$(compose exec -T -e CRON_JOB_STDOUT=/dev/stdout -e CRON_JOB_STDERR=/dev/stderr archiver /app/docker/cron-job.sh /app/.cron-env printenv REDIS_URL)"
[ "$job_env" = "redis://127.0.0.1:$REDIS_PORT/0" ] || fail "cron jobs see REDIS_URL=$job_env"
say "2. $archived; crontab: hourly archive and daily purge, as app, with the container's environment"

# --- 3. the admin in a browser ---------------------------------------------------------
password="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
compose exec -T web python manage.py shell -c "
from django.contrib.auth.models import Group, User
user = User.objects.create_user('support-smoke', password='$password', is_staff=True)
user.groups.add(Group.objects.get(name='support'))" || fail "cannot create the support user"
.venv/bin/python scripts/smoke_browser.py http://127.0.0.1:8000 support-smoke "$password" cust-0001 "ORD-1234" \
    || fail "the support user could not read the transcript in the browser"
say "3. a support user logged in with headless Chromium and read a transcript"

# --- 4. restarts keep every row --------------------------------------------------------
before="$(rows)"
compose restart archiver >/dev/null 2>&1
wait_health archiver healthy 180
[ "$(rows)" = "$before" ] || fail "restart archiver: $before rows before, $(rows) after"
compose down >/dev/null 2>&1
compose up -d --no-build >/dev/null 2>&1
wait_health archiver healthy 180
wait_web
[ "$(rows)" = "$before" ] || fail "down / up: $before rows before, $(rows) after"
# Read the whole log first: `grep -q` stops reading at its match, and under pipefail the
# writer's broken pipe would fail the check whenever more log follows the line.
logs="$(compose logs archiver)"
grep -qF 'No migrations to apply' <<<"$logs" || fail "after down / up the archiver did not find the schema in place"
say "4. restart and down / up kept all $before rows"

# --- 5. health follows Redis -----------------------------------------------------------
# A run as cron starts it: as app, with the saved environment, its output in the container's log.
scheduled_run() { compose exec -T archiver /app/docker/cron-job.sh /app/.cron-env python /app/manage.py archive_checkpoints; }
compose stop redis >/dev/null 2>&1
if scheduled_run; then fail "a run without Redis exited 0"; fi
wait_health archiver unhealthy 60
compose start redis >/dev/null 2>&1
wait_health redis healthy 60
scheduled_run || fail "the run after Redis came back failed"
wait_health archiver healthy 60
logs="$(compose logs archiver)"
for line in "Starting conversation archival run at " "Completed archival run in " "Redis connection failed"; do
    grep -qF "$line" <<<"$logs" || fail "docker-compose logs archiver has no '$line' line"
done
say "5. unhealthy while Redis was stopped, healthy after the next run; the log has the guide's lines"

# --- 6. who it runs as, and what it refuses --------------------------------------------
[ "$("$DOCKER" run --rm "$IMAGE" id -un)" = app ] || fail "the image does not run as app"
[ "$(compose exec -T web id -un)" = app ] || fail "the web service does not run as app"
if refused="$("$DOCKER" run --rm --name archiver-smoke-refused --network host -e DJANGO_SECRET_KEY= -e DJANGO_ALLOWED_HOSTS=127.0.0.1 \
        -e "DATABASE_URL=postgresql://archiver:change-me@127.0.0.1:$PG_PORT/archive" \
        -e ARCHIVER_DB_WAIT_SECONDS=10 "$IMAGE" web 2>&1)"; then
    fail "web started without DJANGO_SECRET_KEY"
fi
grep -q "DJANGO_SECRET_KEY is not set" <<<"$refused" || fail "web refused to start, but did not say why: $refused"
say "6. the image runs as app; web refuses to start without DJANGO_SECRET_KEY"

say "all checks passed in $(($(date +%s) - started))s (image ${image_mb} MB, built in ${build_seconds}s)"
