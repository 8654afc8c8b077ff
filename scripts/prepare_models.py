"""Prepare the embedded models once: assemble Whisper base, convert SmolLM2 from GGUF.

Run by `make setup`; safe to run again (finished copies are kept). MODELS_DIR from the environment.
"""

from __future__ import annotations

import logging
import sys

from backend.app.backends import embedded
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    try:
        print("whisper tiny.en:", embedded.whisper_tiny_en_dir())
        print("whisper base (multilingual):", embedded.whisper_base_dir(settings.models_dir))
        print("SmolLM2:", embedded.smollm2_dir(settings.models_dir))
        print("piper voice:", embedded.piper_voice_file())
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
