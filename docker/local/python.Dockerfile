# A stand-in for python:3.12-slim-bookworm, for machines that cannot reach an image registry
# (scripts/docker-smoke.sh): Debian bookworm made by debootstrap and imported as
# archiver-local/debian:bookworm, with Debian's Python (3.11) in a virtualenv first on PATH,
# so `python` and `pip` are what the official image has.
ARG DEBIAN_IMAGE=archiver-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN python3 -m venv /opt/python
ENV PATH=/opt/python/bin:$PATH \
    LANG=C.UTF-8
