"""A small MCP server for the tests and benchmarks, written with the `mcp` SDK: a home's weather,
lights, a timer, a slow tool and one with a huge result. `python -m bench.mcp_home` serves it on
stdio; `... http PORT [TOKEN]` on streamable HTTP at /mcp (with TOKEN, requests must carry
`Authorization: Bearer TOKEN`)."""

from __future__ import annotations

import sys
import time

from mcp.server.mcpserver import MCPServer

home = MCPServer("home")
LIGHTS: dict[str, bool] = {}


@home.tool()
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f'{{"city": "{city}", "temperature_c": 31, "sky": "clear"}}'


@home.tool()
def set_light(room: str, on: bool) -> str:
    """Turn the lights in a room on or off."""
    LIGHTS[room] = on
    return f"The {room} light is now {'on' if on else 'off'}."


@home.tool()
def set_timer(minutes: int) -> str:
    """Start a kitchen timer for a number of minutes."""
    return f"A timer is set for {minutes} minutes."


@home.tool()
def slow_lookup(query: str) -> str:
    """Look something up in the slow archive (takes a minute)."""
    time.sleep(60)
    return "found"


@home.tool()
def big_report(topic: str) -> str:
    """Write a very long report on a topic."""
    return ("All is well. " * 2_000_000)[: 10 * 1024 * 1024]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        port = int(sys.argv[2])
        if len(sys.argv) > 3:
            _require_token(sys.argv[3])
        home.run("streamable-http", host="127.0.0.1", port=port)
    else:
        home.run()


def _require_token(token: str) -> None:
    """Refuse requests without the bearer token (a server behind a header, as Home Assistant's)."""
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import JSONResponse

    original = home.streamable_http_app

    def guarded(**kwargs: object) -> object:
        app = original(**kwargs)  # type: ignore[arg-type]

        async def check(request, call_next):  # type: ignore[no-untyped-def]
            if request.headers.get("authorization") != f"Bearer {token}":
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            return await call_next(request)

        app.add_middleware(BaseHTTPMiddleware, dispatch=check)
        return app

    home.streamable_http_app = guarded  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
