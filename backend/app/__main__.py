"""`python -m backend.app`: load the models, then serve with uvicorn.

Models load before the port opens, so a missing or corrupt model file ends start-up with one clear
message and exit status 2, instead of a traceback or a server that answers 503 forever.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.app",
        description=(
            "Voice-dialogue server (STT -> LLM -> TTS). Every setting is an environment variable "
            "(also read from .env); the flags below override HOST, PORT and LOG_LEVEL."
        ),
    )
    parser.add_argument("--host", help="listen address (HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (PORT, default 8000)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="LOG_LEVEL")
    parser.add_argument(
        "--check", action="store_true", help="load the models, report, and exit without serving"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "log_level": args.log_level}.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except Exception as e:  # pydantic ValidationError: show the bad variable, not a traceback
        print(f"error: invalid configuration: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from backend.app.main import create_app
    from backend.app.services.container import build_services

    try:
        services = build_services(settings)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        for name in ("stt", "chat", "tts"):
            info = getattr(services, name).backend.info
            print(f"{name}: {info.model} on {info.device}")
        return 0
    app = create_app(settings, services)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    finally:
        services.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
