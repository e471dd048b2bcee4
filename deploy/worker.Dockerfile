# syntax=docker/dockerfile:1
# The model worker: CUDA torch + transformers. Build from the repo root:
#   docker build -f deploy/worker.Dockerfile -t smartseg-worker:0.1.0 .
# CPU-only (docker-compose.cpu.yml builds it so):
#   --build-arg BASE_IMAGE=ubuntu:24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#
# torch 2.13.0 is built for CUDA 13.0 (the cu130 index; PyPI's Linux wheel is the same build) and brings
# its CUDA libraries (cuBLAS, cuDNN, ...) as wheels, so the `base` CUDA image is enough: the `runtime` one
# would add a second copy. The host needs an NVIDIA driver that supports CUDA 13.0 (580 or newer) and the
# NVIDIA Container Toolkit.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/smartseg/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    SMARTSEG_MODEL_DIR=/models

# Ubuntu 24.04's Python (3.12) in a virtualenv of its own. Its packages follow the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/smartseg

# torch first, pinned, from the index of its CUDA build: left to the resolver, `transformers` would pick one.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
# Every folder pyproject.toml's [tool.setuptools.package-dir] maps (smartseg.api, smartseg.worker, ...).
COPY api api
COPY cli cli
COPY sdk sdk
COPY shared shared
COPY testing testing
COPY worker worker
# The torch above satisfies the [models] extra's, so pip keeps it. Weights are not in the image: they go in
# SMARTSEG_MODEL_DIR (a volume), copied from SMARTSEG_MODEL_URI at start or fetched with `smartseg models`.
# DL3013 asks for pinned pip packages: this is the project itself, its dependencies bounded by pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[models]" \
    && rm -rf /app/* \
    && useradd --system --uid 10001 --no-create-home smartseg \
    && mkdir -p /models \
    && chown smartseg /models

USER 10001
CMD ["smartseg", "worker"]
