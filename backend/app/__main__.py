"""`python -m backend.app`: check the model files, then serve with uvicorn while the models load.

The pre-flight runs before the port opens: a bad API_KEYS_FILE, or a missing or corrupt model file
(checked against the SHA-256 manifest written at install), ends start-up at once with one clear
message and exit status 2, not a traceback or a server restarting in a loop. The models then load
in the background: /health reports `loading` and /health/ready answers 503 until every model is up.

SIGTERM or SIGINT stops the server gracefully: new connections are refused, requests in flight get
SHUTDOWN_GRACE_S to finish, then the models are released and the conversation store is closed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import uvicorn

from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError, StorageOpenError
from backend.app.core.keys import KeyFileError, load_keys

EXIT_BAD_CONFIG = 2
"""Invalid settings or model files: restarting will not help, so orchestrators should not retry."""


def _exit_cleanly(signum: int, frame: object) -> None:
    logging.getLogger("backend.app").info("stopped by %s", signal.Signals(signum).name)
    sys.exit(0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.app",
        description=(
            "Voice-dialogue server (STT -> LLM -> TTS). Every setting is an environment variable "
            "(also read from .env); the flags below override HOST, PORT, LOG_LEVEL and LOG_FORMAT. "
            "Exit status 2: invalid settings, API key file, model files or conversation database (the "
            "message says which)."
        ),
    )
    parser.add_argument("--host", help="listen address (HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (PORT, default 8000)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="LOG_LEVEL")
    parser.add_argument("--log-format", choices=["json", "text"], help="LOG_FORMAT (default json)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the model files, load the models, report, and exit without serving",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["check"],
        help="`check [stt] [chat] [tts]`: load those stages (all three by default), run each once on "
        "built-in input, print its timing, and exit without serving",
    )
    parser.add_argument("stages", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stages and args.command != "check":
        parser.error("stages are given after `check`")
    unknown = [stage for stage in args.stages if stage not in ("stt", "chat", "tts")]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r}: choose from stt, chat, tts")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = {"host": args.host, "port": args.port, "log_level": args.log_level, "log_format": args.log_format}
    try:
        settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    except Exception as e:  # pydantic ValidationError: show the bad variable, not a traceback
        print(f"error: invalid configuration: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    # GOMP_SPINCOUNT=10000 and no progress bars, unless set: read as the model libraries load.
    from backend.app.core.process import set_model_process_env

    set_model_process_env()
    from backend.app.core.memory import limit_arenas

    limit_arenas()  # before any worker thread exists
    from backend.app.core.logs import configure_logging

    configure_logging(settings.server.log_level, settings.server.log_format)
    logger = logging.getLogger("backend.app")
    from backend.app.backends import manifest
    from backend.app.storage.conversations import ConversationStore

    try:
        # The API keys first (a bad key file), then the database: both are quick, and the operator's to fix.
        api_key = settings.server.api_key
        load_keys(api_key.get_secret_value() if api_key else None, settings.server.api_keys_file)
        if settings.storage.database_url is not None:
            from backend.app.storage.postgres import PostgresStore

            PostgresStore.check(settings.storage.database_url.get_secret_value())
        else:
            ConversationStore.check(settings.storage.data_dir / "conversations.db")
        manifest.preflight(settings)
    except (KeyFileError, ModelLoadError, StorageOpenError) as e:
        logger.error("cannot start: %s", e)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.command == "check":
        from backend.app import selfcheck

        try:
            return selfcheck.run(settings, args.stages)
        except ModelLoadError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_CONFIG
    if args.check:
        from backend.app.container import build_services

        try:
            services = build_services(settings)
        except ModelLoadError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        for name in ("stt", "chat", "tts"):
            info = getattr(services, name).backend.info
            print(f"{name}: {info.model} on {info.device}")
        services.shutdown()
        return 0
    from backend.app.main import create_app

    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the handler
    # that was there before it: this one, so a clean shutdown exits 0 (not 143 or a traceback).
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        log_config=None,  # configure_logging above: one format for our lines and uvicorn's
        access_log=False,  # the request middleware writes the access lines (with request ids)
        timeout_graceful_shutdown=settings.server.shutdown_grace_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
