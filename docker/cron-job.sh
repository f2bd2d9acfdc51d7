#!/bin/bash
# Runs one cron job in the archiver container; every crontab line starts with this script:
#
#   cron-job.sh ENV_FILE COMMAND [ARG...]
#
# Safety design:
# - cron starts jobs with an almost empty environment (no DATABASE_URL, no REDIS_URL) and
#   treats "%" in a crontab line as a newline. The line therefore holds no values at all:
#   they come from ENV_FILE, which docker/entrypoint.sh wrote from the container's
#   environment with every value shell-quoted (so "%", quotes, "$", spaces and newlines
#   arrive unchanged) and mode 600.
# - cron would mail a job's output to nobody. It goes to the container's stdout and stderr
#   instead (PID 1's, so "docker-compose logs archiver" shows it); CRON_JOB_STDOUT and
#   CRON_JOB_STDERR override the targets (the tests use them; cron never sets them).
#   The redirection is opened while still root, so the job keeps it after dropping root.
# - cron runs as root; the job runs as ARCHIVER_CRON_USER (from ENV_FILE) when that is set.
# - A missing ENV_FILE fails the job with a message, rather than running it against the
#   defaults (an SQLite file, Redis on localhost).
set -euo pipefail

out="${CRON_JOB_STDOUT:-/proc/1/fd/1}"
err="${CRON_JOB_STDERR:-/proc/1/fd/2}"
if [ -w "$out" ]; then exec >>"$out"; fi
if [ -w "$err" ]; then exec 2>>"$err"; fi

if [ "$#" -lt 2 ]; then
    echo "cron-job.sh: usage: cron-job.sh ENV_FILE COMMAND [ARG...]" >&2
    exit 2
fi
env_file="$1"
shift
if [ ! -r "$env_file" ]; then
    echo "cron-job.sh: cannot read $env_file, so '$*' did not run; the archiver container's entrypoint writes it at start: restart the container." >&2
    exit 1
fi
# shellcheck source=/dev/null
. "$env_file"

user="${ARCHIVER_CRON_USER:-}"
if [ -n "$user" ] && [ "$(id -u)" -eq 0 ] && [ "$user" != root ]; then
    entry="$(getent passwd "$user" || true)"
    if [ -z "$entry" ]; then
        echo "cron-job.sh: ARCHIVER_CRON_USER=$user is not a user of this system, so '$*' did not run." >&2
        exit 1
    fi
    IFS=: read -r _ _ uid gid _ home _ <<<"$entry"
    export HOME="$home" USER="$user" LOGNAME="$user"
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
fi
exec "$@"
