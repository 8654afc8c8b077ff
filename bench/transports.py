"""The ways a call reaches the server, side by side: end of speech -> first reply audio over our
WebSocket (/ws/conversation), over WebRTC (/conversation/calls, aiortc as the browser) and over a
phone's media stream (/phone/twilio, Twilio's protocol at 8 kHz µ-law), for the same spoken
requests; and the word error rate of the same requests heard at 8 kHz µ-law against 16 kHz.

Each request (the latency section's five, spoken by the embedded voice) is streamed as a microphone
would, in 20 ms frames at real-time pace and then silence, over each transport in turn (the order
alternating). The clock starts at the last loud sample sent and stops when the first reply audio
arrives: the first binary frame (WebSocket), the first audible frame decoded from the reply's Opus
track (WebRTC: RTP, jitter buffer and decoding included, as a browser hears it), the first `media`
message (phone). Goals: WebRTC within 0.1 s of the WebSocket; 8 kHz WER within +0.1 of 16 kHz.
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import time
from pathlib import Path

import av
import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from websockets.asyncio.client import connect

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.encode import encode_audio, to_pcm16
from backend.app.audio.g711 import G711
from backend.app.audio.types import Audio
from backend.app.text.wer import word_error_rate
from bench import machine
from bench.common import median, percentile, pyplot, table
from bench.latency import FRAME_S, REQUESTS, speech_end_offset, spoken_requests, websocket_turn

GOAL_WEBRTC_S = 0.1
GOAL_WER = 0.1
MAX_S = 12.0


class ClipTrack(MediaStreamTrack):
    """A microphone that says `samples` (48 kHz) at real-time pace once `begin` is called (the
    session is ready, as the page waits for `ready`), silent before and after."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, speech_end_s: float) -> None:
        super().__init__()
        self.pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
        self.speech_end_s = speech_end_s
        self.start = 0.0
        self.sent = 0
        self.said_from: int | None = None  # the frame at which `begin` was called

    def begin(self) -> None:
        self.said_from = self.sent

    async def recv(self) -> AudioFrame:
        step = 960
        if self.sent == 0:
            self.start = time.perf_counter()
        else:
            await asyncio.sleep(max(0.0, self.start + self.sent / 48000 - time.perf_counter()))
        chunk = np.zeros(step, dtype="<i2")
        if self.said_from is not None:
            said = self.pcm[self.sent - self.said_from : self.sent - self.said_from + step]
            chunk[: len(said)] = said
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.sent, fractions.Fraction(1, 48000)
        self.sent += step
        return frame

    @property
    def speech_over(self) -> float:
        assert self.said_from is not None
        return self.start + self.said_from / 48000 + self.speech_end_s


async def webrtc_turn(base: str, audio: Audio, offset: float) -> dict[str, float]:
    """One turn over /conversation/calls: the clip as the call's microphone, to the first audible
    reply frame (and to the `audio_start` event)."""
    pc = RTCPeerConnection()
    microphone = ClipTrack(resample(audio, 48000).samples, offset)
    pc.addTrack(microphone)
    channel = pc.createDataChannel("events")
    marks: dict[str, float] = {}
    heard = asyncio.Event()

    @channel.on("open")
    def on_open() -> None:
        channel.send(json.dumps({"type": "start", "sample_rate": 16000}))

    @channel.on("message")
    def on_message(message: str) -> None:
        event = json.loads(message)
        if event["type"] == "ready":
            microphone.begin()
        elif event["type"] == "speech_end":
            marks["speech_end"] = time.perf_counter()
        elif event["type"] == "audio_start":
            marks.setdefault("audio_start", time.perf_counter())

    async def hear(track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        while not heard.is_set():
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                level = float(np.sqrt(np.mean(out.to_ndarray() ** 2)))
                if level > 0.001 and "speech_end" in marks:
                    marks["first_audio"] = time.perf_counter()
                    heard.set()

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.create_task(hear(track))))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{base}/conversation/calls",
                content=pc.localDescription.sdp,
                headers={"content-type": "application/sdp"},
            )
        response.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        await asyncio.wait_for(heard.wait(), 60)
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
    return {
        "rtc_from_speech_over_s": marks["first_audio"] - microphone.speech_over,
        "rtc_event_from_speech_over_s": marks["audio_start"] - microphone.speech_over,
        "rtc_from_speech_end_s": marks["first_audio"] - marks["speech_end"],
    }


async def phone_turn(base: str, ulaw: bytes, offset: float) -> dict[str, float]:
    """One call over /phone/twilio (Twilio's messages, 20 ms of µ-law each) to the first `media`."""
    url = base.replace("http://", "ws://") + "/phone/twilio"
    sid = "MZbench"
    marks: dict[str, float] = {}
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "streamSid": sid,
            "callSid": f"CAbench{time.monotonic_ns()}",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {},
        }
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": sid}))
        silence = G711("pcmu").encode(np.zeros(160, np.float32))

        async def send_audio() -> None:
            started = time.perf_counter()
            marks["speech_over"] = started + offset
            sent = 0
            while "first_audio" not in marks and sent < MAX_S / FRAME_S:
                chunk = ulaw[sent * 160 : (sent + 1) * 160] or silence
                media = {"track": "inbound", "payload": base64.b64encode(chunk).decode()}
                await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": media}))
                sent += 1
                await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.perf_counter()))

        async def receive() -> None:
            while True:
                message = json.loads(await ws.recv())
                if message["event"] == "media":
                    marks["first_audio"] = time.perf_counter()
                    return

        sender = asyncio.create_task(send_audio())
        await asyncio.wait_for(receive(), 60)
        await sender
        await ws.send(json.dumps({"event": "stop", "streamSid": sid, "stop": {}}))
    return {"phone_from_speech_over_s": marks["first_audio"] - marks["speech_over"]}


def telephone(audio: Audio) -> Audio:
    """`audio` as a phone line carries it: 8 kHz µ-law, decoded again (16 kHz for the STT)."""
    law = G711("pcmu")
    narrow = law.decode(law.encode(resample(audio, 8000).samples))
    return resample(Audio(narrow, 8000), 16000)


def error_rates(http: httpx.Client, clips: list[tuple[str, Audio]]) -> list[tuple[str, float, float]]:
    """(request, WER at 16 kHz, WER at 8 kHz µ-law), through the server's /stt."""
    rows = []
    for text, audio in clips:
        rates = []
        for version in (audio, telephone(audio)):
            files = {"file": ("speech.wav", encode_audio(version, "wav"), "audio/wav")}
            response = http.post("/stt", files=files, data={"language": "en"})
            response.raise_for_status()
            rates.append(word_error_rate(text, response.json()["text"]))
        rows.append((text, rates[0], rates[1]))
    return rows


def measure(port: int, runs: int) -> tuple[list[dict[str, float]], list[tuple[str, float, float]]]:
    base = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/ws/conversation"
    prepared = []
    for text, clip in spoken_requests():
        audio = decode_audio(clip, 16000)
        offset = speech_end_offset(audio.samples, 16000)
        ulaw = G711("pcmu").encode(resample(audio, 8000).samples)
        prepared.append((text, audio, to_pcm16(audio), ulaw, offset))
    _, audio, pcm, ulaw, offset = prepared[0]
    asyncio.run(websocket_turn(url, pcm, offset))  # warm-up: first-request costs are not latency
    asyncio.run(webrtc_turn(base, audio, offset))
    asyncio.run(phone_turn(base, ulaw, offset))
    rows: list[dict[str, float]] = []
    for run in range(runs):
        for index, (_, audio, pcm, ulaw, offset) in enumerate(prepared):
            row: dict[str, float] = {"request": index}
            order = [0, 1, 2][(run + index) % 3 :] + [0, 1, 2][: (run + index) % 3]
            for which in order:
                time.sleep(1)  # the previous reply winds down before the next turn
                if which == 0:
                    row |= asyncio.run(websocket_turn(url, pcm, offset))
                elif which == 1:
                    row |= asyncio.run(webrtc_turn(base, audio, offset))
                else:
                    row |= asyncio.run(phone_turn(base, ulaw, offset))
            rows.append(row)
            ws, rtc, phone = (
                row[k]
                for k in ("ws_from_speech_over_s", "rtc_from_speech_over_s", "phone_from_speech_over_s")
            )
            print(f"transports run {run + 1} request {index + 1}: websocket {ws:.2f} s, webrtc {rtc:.2f} s, "
                  f"phone {phone:.2f} s", flush=True)  # fmt: skip
    with httpx.Client(base_url=base, timeout=120) as http:
        rates = error_rates(http, [(text, audio) for text, audio, *_ in prepared])
    return rows, rates


LABELS = [
    ("ws_from_speech_over_s", "WebSocket /ws/conversation: first binary audio frame"),
    ("rtc_from_speech_over_s", "WebRTC /conversation/calls: first audible frame of the reply track"),
    ("rtc_event_from_speech_over_s", "WebRTC /conversation/calls: `audio_start` event"),
    ("phone_from_speech_over_s", "Phone /phone/twilio (8 kHz µ-law): first `media` message"),
    ("ws_from_speech_end_s", "WebSocket: from the server's `speech_end` (turn over) to the first frame"),
    ("rtc_from_speech_end_s", "WebRTC: from the server's `speech_end` to the first audible frame"),
]


def section(rows: list[dict[str, float]], rates: list[tuple[str, float, float]], out: Path) -> list[str]:
    def col(key: str) -> tuple[float, float]:
        values = [r[key] for r in rows]
        return median(values), percentile(values, 90)

    gap = median([r["rtc_from_speech_over_s"] - r["ws_from_speech_over_s"] for r in rows])
    wer16 = float(np.mean([r[1] for r in rates]))
    wer8 = float(np.mean([r[2] for r in rates]))
    lines = [
        "## Transports: WebSocket, WebRTC and a phone's media stream",
        "",
        f"Input: the latency section's {len(REQUESTS)} spoken requests, each streamed at real-time pace "
        f"over each transport in turn (order rotating), {len(rows)} turns each. The clock runs from the "
        "last loud sample sent to the first reply audio.",
        "",
    ]
    lines += table(
        ["end of speech -> first audio", "median s", "p90 s"],
        [[label, *(f"{v:.2f}" for v in col(key))] for key, label in LABELS],
    )
    lines += ["", "Word error rate of the same requests through /stt:", ""]
    lines += table(
        ["request", "16 kHz", "8 kHz µ-law"], [[text, f"{a:.2f}", f"{b:.2f}"] for text, a, b in rates]
    )
    lines += [
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| WebRTC within {GOAL_WEBRTC_S:g} s of the WebSocket (median of per-turn differences, audible "
        f"frame vs first frame) | {gap:+.3f} s | {'yes' if gap <= GOAL_WEBRTC_S else 'no'} |",
        f"| 8 kHz µ-law WER within +{GOAL_WER:g} of 16 kHz (mean over the requests) | {wer8:.3f} vs "
        f"{wer16:.3f} ({wer8 - wer16:+.3f}) | {'yes' if wer8 - wer16 <= GOAL_WER else 'no'} |",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![transports](transports.png)",
        "",
    ]
    plot(rows, out / "transports.png")
    return lines


def plot(rows: list[dict[str, float]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    data = [np.array([r[key] for r in rows]) for key, _ in LABELS]
    ax.boxplot(data, orientation="horizontal", tick_labels=[label.split(":")[0] for _, label in LABELS])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the last loud sample")
    ax.set_title("End of speech -> first reply audio, by transport (same requests)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
