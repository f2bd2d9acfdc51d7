# A stand-in for postgres:16, for machines that cannot reach an image registry
# (scripts/docker-smoke.sh): Debian's PostgreSQL (15) with an entrypoint that honours the
# official image's POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and its data folder, and PGPORT.
ARG DEBIAN_IMAGE=archiver-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
