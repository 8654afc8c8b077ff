#!/usr/bin/env bash
# Build the image if it is not there yet, then run the voice server in a container, with the
# volumes, port and GPU access the README documents: ./voices read-only at /app/voices, named
# volumes for models, outputs and data, port 8000 (and 10300 for Wyoming when WYOMING_URI is set).
#
#   scripts/start-podman.sh [--docker] [--cpu] [--build] [--dry-run] [-- extra run arguments]
#
#   --docker   use docker instead of podman (the same flags; GPUs through --gpus all)
#   --cpu      the CPU image and the embedded models (no GPU needed)
#   --build    build the image even if it exists
#   --dry-run  print the commands instead of running them
#
# Settings come from the environment as for `make run` (STT_MODEL_NAME, TTS_MODEL_NAME, API_KEY,
# PORT, WYOMING_URI, DATABASE_URL, ...): every variable the README lists that is set is passed on.
# Podman reaches the GPU through CDI: run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`
# once. The container is named voice-dialogue; stop it with `podman stop voice-dialogue`.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=podman
target=gpu
build=0
dry=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --docker) engine=docker; shift ;;
    --cpu) target=cpu; shift ;;
    --build) build=1; shift ;;
    --dry-run) dry=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

image="voice-dialogue:${target}"
run() {
  if [ "$dry" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [ "$dry" = 0 ] && ! command -v "$engine" >/dev/null 2>&1; then
  echo "$engine is not installed (pass --docker to use docker, or install $engine)" >&2
  exit 2
fi
if [ "$build" = 1 ] || { [ "$dry" = 0 ] && ! "$engine" image inspect "$image" >/dev/null 2>&1; }; then
  run "$engine" build --target "$target" -t "$image" .
fi

port="${PORT:-8000}"
args=(run -d --name voice-dialogue --replace -p "${port}:8000"
  -v "$PWD/voices:/app/voices:ro"
  -v voice-models:/app/models -v voice-outputs:/app/outputs -v voice-data:/app/data)
if [ "$engine" = docker ]; then
  args=("${args[@]/--replace/--rm}")
fi
if [ -n "${WYOMING_URI:-}" ]; then
  args+=(-p "${WYOMING_PORT:-10300}:10300" -e WYOMING_URI)
fi
if [ "$target" = gpu ]; then
  if [ "$engine" = podman ]; then
    args+=(--device nvidia.com/gpu=all --security-opt=label=disable)
  else
    args+=(--gpus all)
  fi
  args+=(-e STT_DEVICE=cuda -e TTS_DEVICE=cuda -e LLM_DEVICE=cuda
    -e "STT_MODEL_NAME=${STT_MODEL_NAME:-large-v3}"
    -e "TTS_MODEL_NAME=${TTS_MODEL_NAME:-vibevoice/VibeVoice-1.5B-hf}"
    -e "HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0}")
fi
# Every other setting the README lists, when it is set here: passed by name, so that a secret
# (API_KEY, LLM_API_KEY, a password in DATABASE_URL) never shows on a command line.
for name in API_KEY CORS_ORIGINS DEFAULT_VOICE LOG_FORMAT LOG_LEVEL LLM_BACKEND LLM_MODEL LLM_BASE_URL \
  LLM_API_KEY LLM_MAX_TOKENS SYSTEM_PROMPT DATABASE_URL QUEUE_SIZE MAX_UPLOAD_MB OPENAI_VOICES \
  WYOMING_ZEROCONF SEGMENT_THRESHOLD_CHARS SPEAKER_CACHE_SIZE; do
  if [ -n "${!name:-}" ]; then
    args+=(-e "$name")
  fi
done
if [ "$target" = cpu ]; then
  for name in STT_MODEL_NAME TTS_MODEL_NAME; do
    if [ -n "${!name:-}" ]; then
      args+=(-e "$name")
    fi
  done
fi
run "$engine" "${args[@]}" "${extra[@]}" "$image"
if [ "$dry" = 0 ]; then
  echo "started: http://localhost:${port} (logs: $engine logs -f voice-dialogue)"
fi
