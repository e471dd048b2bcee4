# syntax=docker/dockerfile:1
# The API image: no torch. It also runs `smartseg router`, `smartseg deliverer` and a `lite`-only
# `smartseg worker`. Build from the repo root:
#   docker build -f deploy/api.Dockerfile -t smartseg-api:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SMARTSEG_API_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
# Every folder pyproject.toml's [tool.setuptools.package-dir] maps (smartseg.api, smartseg.worker, ...).
COPY api api
COPY cli cli
COPY sdk sdk
COPY shared shared
COPY testing testing
COPY worker worker
# No [local] extra: Redis and S3 are real services here. The sources only build the wheel.
RUN pip install --no-cache-dir . \
    && rm -rf /app/* \
    && useradd --system --uid 10001 --no-create-home smartseg

USER 10001
EXPOSE 8000
CMD ["smartseg", "api"]
