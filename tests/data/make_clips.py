"""Regenerate the checked-in test clips: `python -m tests.data.make_clips`.

One sentence spoken by the embedded Piper voice, written with PyAV (FFmpeg) in each container a
browser or phone records, at the rates and channel counts those devices use. Also a silent clip,
and a German sentence spoken by espeak-ng (for translation; needs the `espeak-ng` command).
The clips are our own synthesis, so the repository may ship them.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np
import soxr

from backend.app.backends.piper import PiperBackend
from backend.app.core.values import SynthesisRequest

SENTENCE = "Please turn on the kitchen lights and play some quiet music."
GERMAN = "Guten Morgen. Das Wetter ist heute sehr schön, und ich gehe mit meinem Hund im Park spazieren."
HERE = Path(__file__).parent

# name: (container format, codec, sample rate, channels)
CLIPS = {
    "speech.wav": ("wav", "pcm_s16le", 44_100, 2),
    "speech.mp3": ("mp3", "libmp3lame", 44_100, 2),
    "speech.flac": ("flac", "flac", 16_000, 1),
    "speech.ogg": ("ogg", "libopus", 48_000, 1),
    "speech.webm": ("webm", "libopus", 48_000, 2),
    "speech.m4a": ("ipod", "aac", 44_100, 1),
    "speech.mp4": ("mp4", "aac", 48_000, 2),
}


def write(path: Path, samples: np.ndarray, rate: int, fmt: str, codec: str, channels: int) -> None:
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if codec not in ("pcm_s16le", "flac"):
            stream.bit_rate = 48_000
        planar = np.repeat(samples.reshape(1, -1), channels, axis=0).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    voice = PiperBackend("embedded")
    speech = voice.synthesize(SynthesisRequest(SENTENCE))
    for name, (fmt, codec, rate, channels) in CLIPS.items():
        samples = soxr.resample(speech.samples, speech.sample_rate, rate).astype(np.float32)
        write(HERE / name, samples, rate, fmt, codec, channels)
    write(HERE / "silence.wav", np.zeros(16_000 * 2, dtype=np.float32), 16_000, "wav", "pcm_s16le", 1)
    (HERE / "SENTENCE.txt").write_text(SENTENCE + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Path(tmp) / "german.wav"
        subprocess.run(["espeak-ng", "-v", "de", "-s", "140", "-w", str(spoken), GERMAN], check=True)
        with av.open(str(spoken)) as source:
            frames = [f.to_ndarray().reshape(-1) for f in source.decode(audio=0)]
            rate = source.streams.audio[0].rate
        german = np.concatenate(frames).astype(np.float32) / (32768.0 if frames[0].dtype == np.int16 else 1.0)
    german = soxr.resample(german, rate, 16_000).astype(np.float32)
    write(HERE / "german.flac", german, 16_000, "flac", "flac", 1)


if __name__ == "__main__":
    main()
