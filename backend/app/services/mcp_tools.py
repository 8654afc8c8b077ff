"""Server-side tools: the MCP servers named in MCP_SERVERS, reached with the `mcp` SDK's client.

Each server gets a task of its own that connects (a command on stdio, or a streamable-HTTP URL
with its headers), lists its tools, lists them again every MCP_REFRESH_S, and reconnects after a
failure (backing off up to MCP_REFRESH_S); a server that is down has no tools offered until it is
back. The server starts connecting at start-up, beside the models' loading; a turn offers the
tools listed by then.

Tool names are offered as OpenAI's rule allows (letters, digits, `_`, `-`; other characters become
`_`); a name two servers share is prefixed with its server's name. A call is bounded by
TOOL_TIMEOUT_S and its result by TOOL_RESULT_CHARS; a server that is down, slow or failing gives
an error step (`ToolStep.error`): when every call of a round failed, the turn says "I couldn't
reach ..." aloud and ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

from backend.app.core.errors import InvalidInputError
from backend.app.core.sections import McpServer, ToolsSettings
from backend.app.core.tools import check_tool
from backend.app.core.values import ToolCall, ToolSpec

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ToolStep:
    """One call a reply made and what came of it (stored with the turn)."""

    call: ToolCall
    result: str
    server: str = ""
    error: bool = False
    ms: float = 0.0

    def stored(self) -> dict[str, Any]:
        return {
            "id": self.call.id,
            "name": self.call.name,
            "arguments": self.call.arguments,
            "result": self.result,
            "server": self.server,
            "error": self.error,
            "ms": round(self.ms, 1),
        }


@dataclass(frozen=True)
class _Offered:
    server: str
    name: str
    """The tool's own name on its server."""
    spec: ToolSpec


class McpTools:
    """The tools of the configured MCP servers, kept listed, and their calls."""

    def __init__(self, settings: ToolsSettings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}
        self._listed: dict[str, list[tuple[str, ToolSpec]]] = {}
        self._offered: dict[str, _Offered] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def servers(self) -> dict[str, McpServer]:
        return self.settings.mcp_servers

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools offered now (those of the servers that answered their last listing)."""
        return tuple(o.spec for o in self._offered.values())

    def server_of(self, name: str) -> str:
        offered = self._offered.get(name)
        return offered.server if offered else ""

    def status(self) -> dict[str, dict[str, object]]:
        """Per server: whether it is connected and how many tools it offers (for /health)."""
        return {
            name: {"connected": name in self._clients, "tools": len(self._listed.get(name, []))}
            for name in self.servers
        }

    async def start(self) -> None:
        """Connect to every server and wait (up to TOOL_TIMEOUT_S) for their first listings."""
        self._loop = asyncio.get_running_loop()
        firsts = []
        for name, server in self.servers.items():
            first = asyncio.Event()
            firsts.append(first)
            self._tasks.append(asyncio.create_task(self._keep(name, server, first), name=f"mcp-{name}"))
        if firsts:
            waiting = [asyncio.create_task(f.wait()) for f in firsts]
            await asyncio.wait(waiting, timeout=self.settings.timeout_s)
            for task in waiting:
                task.cancel()
            logger.info("MCP tools: %s", ", ".join(o for o in self._offered) or "none")

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _client(self, server: McpServer, stack: AsyncExitStack) -> AbstractAsyncContextManager[Any]:
        """A client of `server`; an HTTP connection pool it needs is closed with `stack`."""
        from mcp import Client, StdioServerParameters

        if server.command is not None:
            parameters = StdioServerParameters(
                command=server.command, args=server.args, env=server.env or None, cwd=server.cwd
            )
            return Client(parameters, read_timeout_seconds=self.settings.timeout_s)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert server.url is not None
        # Calls are bounded by TOOL_TIMEOUT_S; the server's event stream may idle longer.
        timeout = httpx2.Timeout(self.settings.timeout_s, read=300)
        http = httpx2.AsyncClient(headers=server.headers, timeout=timeout)
        stack.push_async_callback(http.aclose)
        transport = streamable_http_client(server.url, http_client=http)
        return Client(transport, read_timeout_seconds=self.settings.timeout_s)

    async def _keep(self, name: str, server: McpServer, first: asyncio.Event) -> None:
        """Keep one server connected and its tools listed, for as long as the server runs."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                async with AsyncExitStack() as stack:
                    client = await stack.enter_async_context(self._client(server, stack))
                    self._clients[name] = client
                    while True:
                        await self._list(name, client)
                        delay = 1.0  # listed: a later failure starts its back-off afresh
                        first.set()
                        try:
                            await asyncio.wait_for(self._stop.wait(), self.settings.refresh_s)
                            return
                        except TimeoutError:
                            continue
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # an exception group from the SDK's task group included
                logger.warning("MCP server %s: %s; retrying in %.0f s", name, _reason(e), delay)
            finally:
                self._clients.pop(name, None)
                self._listed.pop(name, None)
                self._index()
            first.set()
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            except TimeoutError:
                delay = min(delay * 2, self.settings.refresh_s)

    async def _list(self, name: str, client: Any) -> None:
        tools: list[tuple[str, ToolSpec]] = []
        cursor = None
        async with asyncio.timeout(self.settings.timeout_s):
            while True:
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    safe = _UNSAFE.sub("_", tool.name)[:64] or "tool"
                    try:
                        spec = check_tool(0, safe, tool.description or "", tool.input_schema or None, "tool")
                    except InvalidInputError as e:
                        logger.warning("MCP server %s: tool %r left out: %s", name, tool.name, e)
                        continue
                    tools.append((tool.name, spec))
                cursor = page.next_cursor
                if not cursor:
                    break
        self._listed[name] = tools
        self._index()

    def _index(self) -> None:
        """The offered names: a tool's own (made safe), or `server_tool` where servers share one."""
        counts: dict[str, int] = {}
        for tools in self._listed.values():
            for _, spec in tools:
                counts[spec.name] = counts.get(spec.name, 0) + 1
        offered: dict[str, _Offered] = {}
        for server, tools in self._listed.items():
            for own, spec in tools:
                name = spec.name
                if counts[name] > 1:
                    name = _UNSAFE.sub("_", f"{server}_{name}")[:64]
                base, n = name, 2
                while name in offered:  # names that became one when made safe or cut to 64
                    name = f"{base[: 64 - len(str(n)) - 1]}_{n}"
                    n += 1
                offered[name] = _Offered(server, own, ToolSpec(name, spec.description, spec.parameters))
        self._offered = offered

    async def call(self, call: ToolCall) -> ToolStep:
        """Run `call` on its server: its text result (cut to TOOL_RESULT_CHARS), or an error step."""
        began = time.perf_counter()
        offered = self._offered.get(call.name)
        server = offered.server if offered else ""
        client = self._clients.get(server) if offered else None
        if offered is None or client is None:
            return ToolStep(call, f"the tool {call.name} is not available", server, True)
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
            async with asyncio.timeout(self.settings.timeout_s):
                result = await client.call_tool(offered.name, arguments)
        except TimeoutError:
            reason = f"{server} did not answer within {self.settings.timeout_s:g} s"
            return ToolStep(call, reason, server, True, _ms(began))
        except Exception as e:
            return ToolStep(call, f"{server} failed: {_reason(e)}", server, True, _ms(began))
        text = _text(result)
        limit = self.settings.result_chars
        if len(text) > limit:
            text = text[:limit] + " [cut]"
        return ToolStep(call, text, server, bool(getattr(result, "is_error", False)), _ms(began))

    def call_blocking(self, call: ToolCall) -> ToolStep:
        """`call` from a worker thread (the LLM's, between two generations of one reply)."""
        if self._loop is None:
            return ToolStep(call, "the tools are not started", "", True)
        future = asyncio.run_coroutine_threadsafe(self.call(call), self._loop)
        try:
            return future.result(self.settings.timeout_s + 5)
        except Exception as e:
            future.cancel()
            return ToolStep(call, f"the call failed: {_reason(e)}", self.server_of(call.name), True)


def _text(result: Any) -> str:
    """A tool result as text: its text blocks, else its structured content as JSON."""
    texts = [str(block.text) for block in getattr(result, "content", []) or [] if hasattr(block, "text")]
    others = [
        f"[{block.type}]" for block in getattr(result, "content", []) or [] if not hasattr(block, "text")
    ]
    if texts or others:
        return "\n".join(texts + others)
    structured = getattr(result, "structured_content", None)
    return json.dumps(structured, ensure_ascii=False) if structured is not None else ""


def _reason(error: BaseException) -> str:
    """The first real cause of `error` (the SDK wraps failures in exception groups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"[:300]


def _ms(began: float) -> float:
    return (time.perf_counter() - began) * 1000


def stored_steps(steps: list[ToolStep]) -> tuple[Mapping[str, Any], ...]:
    return tuple(step.stored() for step in steps)
