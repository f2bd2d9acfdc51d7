#!/bin/bash
# The image's entrypoint. Modes:
#
#   archiver   (default) wait for the database, migrate, write the environment for cron,
#              install the crontab and check it really holds the jobs, archive once, then
#              run cron in the foreground as PID 1. Needs root (cron does); the jobs run as
#              ARCHIVER_CRON_USER.
#   web        wait for the database and the schema, collect static files, serve the admin
#              with gunicorn on port 8000.
#   anything else is run as given, e.g. `docker-compose run --rm archiver python manage.py
#              archive_checkpoints --dry-run`.
#
# Safety design:
# - Every failure that would leave the archiver silently doing nothing stops the container
#   with a FATAL line instead: cron missing, a crontab that does not hold the jobs after
#   `manage.py crontab add` (which exits 0 regardless), the database never coming up, a
#   failed migration. restart: unless-stopped then retries, and the logs say why.
# - Values never pass through a crontab line: docker/startup.py write-env stores the
#   environment shell-quoted in a mode-600 file, and docker/cron-job.sh restores it for each
#   job (see the settings' CRONJOBS block). Start-up commands run through the same script, so
#   a broken environment file fails here, at start, not an hour later.
# - The file can be sourced (the tests do) to call one step at a time; main runs only when
#   it is executed.
set -Eeuo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
CRON_ENV_FILE="${ARCHIVER_CRON_ENV_FILE:-$APP_DIR/.cron-env}"
DB_WAIT_SECONDS="${ARCHIVER_DB_WAIT_SECONDS:-120}"

log() { printf 'entrypoint: %s\n' "$*" >&2; }
die() {
    log "FATAL: $*"
    exit 1
}

manage() { "$PYTHON" "$APP_DIR/manage.py" "$@"; }

# Runs a command exactly as cron runs a job (environment file, user), with its output here.
as_job() { CRON_JOB_STDOUT=/dev/stdout CRON_JOB_STDERR=/dev/stderr "$APP_DIR/docker/cron-job.sh" "$CRON_ENV_FILE" "$@"; }

# yes/no variable with a default; anything else is a configuration error.
flag() {
    local name="$1" value
    value="$(printf '%s' "${!name:-$2}" | tr '[:upper:]' '[:lower:]')"
    case "$value" in
        1 | true | yes | on) return 0 ;;
        0 | false | no | off) return 1 ;;
        *) die "$name=${!name} is not a yes/no value; use 1/0, true/false, yes/no or on/off." ;;
    esac
}

write_cron_env() {
    "$PYTHON" "$APP_DIR/docker/startup.py" write-env "$CRON_ENV_FILE" \
        || die "cannot write $CRON_ENV_FILE, so cron jobs would run without DATABASE_URL and REDIS_URL."
}

install_crontab() {
    # --verbosity 0: at verbosity 1 django-crontab looks up every old line's job while
    # printing it, and crashes on a line whose job is no longer in CRONJOBS.
    manage crontab add --verbosity 0 || die "'manage.py crontab add' failed; see above."
    "$PYTHON" "$APP_DIR/docker/startup.py" verify-crontab \
        || die "the crontab does not hold the archiver's jobs, so nothing would ever be archived (see the line above)."
}

wait_for_schema() {
    local deadline=$((SECONDS + DB_WAIT_SECONDS)) output
    until output="$(manage migrate --check 2>&1)"; do
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$output" >&2
            die "the database schema is still not up to date after ${DB_WAIT_SECONDS}s. The archiver service applies the migrations when it starts (docker-compose logs archiver); or run: docker-compose run --rm web python manage.py migrate"
        fi
        log "waiting for the archiver service to apply the migrations"
        sleep 3
    done
}

run_archiver() {
    [ "$(id -u)" -eq 0 ] \
        || die "archiver mode starts cron, which needs root: run the service as root (user: root, as in docker-compose.yml); the jobs still run as ARCHIVER_CRON_USER (${ARCHIVER_CRON_USER:-unset})."
    command -v cron >/dev/null || die "cron is not installed in this image; rebuild it from the project's Dockerfile."
    write_cron_env
    as_job "$PYTHON" "$APP_DIR/docker/startup.py" wait-db "$DB_WAIT_SECONDS" || die "the database is not reachable; see above."
    as_job "$PYTHON" "$APP_DIR/manage.py" migrate --noinput || die "the migrations failed; see above."
    install_crontab
    if flag ARCHIVER_RUN_AT_START 1; then
        log "archiving once now; then on schedule"
        as_job "$PYTHON" "$APP_DIR/manage.py" archive_checkpoints \
            || log "WARNING: the first archive run ended with exit $?; cron runs it again on schedule, and the health file says what is wrong."
    fi
    log "starting cron"
    exec cron -f
}

run_web() {
    # Checked again when gunicorn loads archive_site/wsgi.py; here it stops the container at
    # once, before waiting for anything.
    [ -n "${DJANGO_SECRET_KEY:-}" ] || die "DJANGO_SECRET_KEY is not set; the admin cannot start without it (see .env.example)."
    [ -n "${DJANGO_ALLOWED_HOSTS:-}" ] || die "DJANGO_ALLOWED_HOSTS is not set; list the host names the admin is served on (see .env.example)."
    "$PYTHON" "$APP_DIR/docker/startup.py" wait-db "$DB_WAIT_SECONDS" || die "the database is not reachable; see above."
    wait_for_schema
    manage collectstatic --noinput --verbosity 0 || die "collectstatic failed; see above."
    local extra=()
    # gunicorn 27 opens a control socket in the home folder (/app, read-only for "app"): not needed.
    # The help is read whole: `grep -q` closing the pipe early would fail it under pipefail.
    local help
    help="$(gunicorn --help 2>/dev/null)" || true
    if grep -qF -- '--no-control-socket' <<<"$help"; then extra+=(--no-control-socket); fi
    exec gunicorn archive_site.wsgi:application --bind 0.0.0.0:8000 --access-logfile - --error-logfile - "${extra[@]}" "$@"
}

main() {
    local mode="${1:-archiver}"
    [ "$#" -eq 0 ] || shift
    case "$mode" in
        archiver) run_archiver "$@" ;;
        web) run_web "$@" ;;
        *) exec "$mode" "$@" ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
