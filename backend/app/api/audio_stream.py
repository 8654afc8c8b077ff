"""Synthesised chunks encoded on the fly, for the routes that stream audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from backend.app.audio.encode import StreamEncoder
from backend.app.audio.types import Audio


async def encoded(chunks: AsyncGenerator[Audio, None], encoder: StreamEncoder) -> AsyncGenerator[bytes, None]:
    """The bytes of `chunks` in the encoder's format, as each chunk arrives (encoding runs in a
    thread); closing this closes `chunks`, which stops the synthesis."""
    async with aclosing(chunks):
        async for chunk in chunks:
            data = await asyncio.to_thread(encoder.encode, chunk)
            if data:
                yield data
    tail = await asyncio.to_thread(encoder.finish)
    if tail:
        yield tail
