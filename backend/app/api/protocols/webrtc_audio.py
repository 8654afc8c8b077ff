"""Audio over WebRTC (aiortc): the caller's track read into a session's 16 kHz input, and the
reply played on a track of our own at real time.

The browser's echo cancellation, noise suppression and gain control apply to what it sends; Opus
coding, jitter buffering and RTP are aiortc's. `ReplyTrack` plays what it is given in 20 ms
frames (silence between replies) and knows how much of each reply has been played, so that a
reply can be sent at the pace it is heard and a barge-in cut it at the word the caller heard."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame

from backend.app.api.protocols.wire_audio import WireFormat
from backend.app.audio.vad import SAMPLE_RATE

TRACK_RATE = 48000
"""The rate the reply track plays at (Opus's)."""

TRACK_FORMAT = WireFormat("audio/pcm", TRACK_RATE)
"""What is handed to the reply track: PCM16 mono at 48 kHz."""

FRAME_SAMPLES = TRACK_RATE // 50
"""20 ms, a frame of the reply track."""

LEAD_S = 0.3
"""How far a reply's audio may be handed to the track ahead of what it has played."""

FEED_S = 0.02
"""The caller's audio goes to the session in pieces of this much."""

Feed = Callable[[np.ndarray], Awaitable[None]]


class ReplyTrack(MediaStreamTrack):
    """The reply's audio, played in real time: `push` PCM16 mono at 48 kHz for a response,
    `finish` it when all is pushed, `clear` to stop at once. `on_started`/`on_stopped` are told
    (with the response's id) when a response's audio begins and ends playing."""

    kind = "audio"

    def __init__(self, on_started: Callable[[str], None], on_stopped: Callable[[str], None]) -> None:
        super().__init__()
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._buffer = bytearray()
        self._response: str | None = None
        self._finished = False
        self._playing = False
        self._played = 0
        self._start = 0.0
        self._timestamp = -1
        self.progress = asyncio.Event()
        """Set each time a frame is played (a sender waiting for room waits on it)."""

    @property
    def queued_s(self) -> float:
        return len(self._buffer) / 2 / TRACK_RATE

    @property
    def played_s(self) -> float:
        """Seconds of the current response played so far."""
        return self._played / TRACK_RATE

    @property
    def response(self) -> str | None:
        return self._response

    def push(self, response: str, pcm: bytes) -> None:
        if response != self._response:
            self._buffer.clear()
            self._response, self._finished, self._playing, self._played = response, False, False, 0
        self._buffer += pcm

    def finish(self, response: str) -> None:
        """All of `response` is pushed: once it has played, `on_stopped`."""
        if response == self._response:
            self._finished = True
            if not self._buffer and self._playing:
                self._stop()

    def clear(self) -> str | None:
        """Drop what is not played yet; the id of the response that was playing, if one was."""
        playing = self._response if (self._playing or self._buffer) else None
        self._buffer.clear()
        self._playing, self._finished = False, True
        return playing

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._timestamp < 0:
            self._start, self._timestamp = time.monotonic(), 0
        else:
            self._timestamp += FRAME_SAMPLES
            wait = self._start + self._timestamp / TRACK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        size = FRAME_SAMPLES * 2
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if data and self._response is not None:
            if not self._playing:
                self._playing = True
                self._on_started(self._response)
            self._played += len(data) // 2
            if not self._buffer and self._finished:
                self._stop()
        frame = AudioFrame.from_ndarray(
            np.frombuffer(data.ljust(size, b"\0"), dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = TRACK_RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        self.progress.set()
        return frame

    def _stop(self) -> None:
        self._playing = False
        if self._response is not None:
            self._on_stopped(self._response)

    async def play(self, response: str, pcm: bytes, pushed: Callable[[float], None]) -> None:
        """Hand `pcm` (of `response`) to the track 100 ms at a time, at the pace it is heard (the
        reply is then still under way, and can be cut, while it plays); `pushed(seconds)` after
        each piece."""
        step = TRACK_RATE // 10 * 2
        for offset in range(0, len(pcm), step):
            piece = pcm[offset : offset + step]
            await self.room()
            self.push(response, piece)
            pushed(len(piece) / 2 / TRACK_RATE)

    async def room(self) -> None:
        """Until the track holds no more than LEAD_S unplayed (or stops playing: 2 s of no
        progress, a peer gone)."""
        while self.queued_s > LEAD_S and self.readyState == "live":
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), 2.0)
            except TimeoutError:
                return


async def listen(track: MediaStreamTrack, feed: Feed) -> None:
    """The caller's audio (Opus decoded by aiortc, any layout) as 16 kHz mono to `feed`, in
    FEED_S pieces, until the track ends."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    held = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, AudioFrame):
            continue
        for out in resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1).astype(np.float32)
            pieces.append(samples)
            held += len(samples)
        if held >= SAMPLE_RATE * FEED_S:
            await feed(np.concatenate(pieces))
            pieces, held = [], 0
