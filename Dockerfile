# The archiver and the support admin, one image (docker-compose.yml runs it twice):
#   archiver   cron runs archive_checkpoints and purge_history (docker/entrypoint.sh)
#   web        gunicorn serves the admin; whitenoise serves its static files
#
# Safety design: the image runs as the unprivileged user "app". Only the archiver service
# starts as root, because cron must; its jobs drop back to "app" (docker/cron-job.sh). The
# code is owned by root and read-only for "app"; only the static files folder is its own.
# The health check reads the health file that every archive run writes.
#
# PYTHON_IMAGE: where no registry can be reached, scripts/docker-smoke.sh passes a local
# stand-in built from Debian (docker/local/). A CA bundle that pip needs to reach the package
# index can be given at build time only, as a BuildKit secret that never enters a layer:
#   DOCKER_BUILDKIT=1 docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TZ=Europe/Madrid

# cron runs the jobs; tzdata gives cron and Django the Europe/Madrid time zone; redis-cli and
# ping are for the operations guide's diagnosis commands (docker-compose exec archiver ...).
# In a container pam_loginuid cannot write /proc/self/loginuid, and cron would then refuse
# every job, so it is made optional.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cron tzdata redis-tools iputils-ping \
    && rm -rf /var/lib/apt/lists/* \
    && if [ -f /etc/pam.d/cron ]; then sed -i 's/^\(session\s\+\)required\(\s\+pam_loginuid\.so\)/\1optional\2/' /etc/pam.d/cron; fi \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app
COPY requirements.txt ./
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-compile -r requirements.txt
COPY . .
RUN chmod 0755 docker/entrypoint.sh docker/cron-job.sh \
    && python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R 10001:10001 /app/staticfiles

# Read by docker/cron-job.sh: the user cron jobs run as ("app", uid 10001).
ENV ARCHIVER_CRON_USER=app
USER 10001:10001
EXPOSE 8000

# The archiver's health: its last run is recent and healthy (see check_archiver_health). The
# web service replaces this with its own check in docker-compose.yml.
HEALTHCHECK --interval=2m --timeout=30s --start-period=5m --retries=3 \
    CMD ["python", "manage.py", "check_archiver_health"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["archiver"]
