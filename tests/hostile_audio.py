"""Audio files whose header fields hold boundary values, for the decode tests and the fuzzers.

Each format's real clip (tests/data) is taken apart at its documented header layout and one field
is set to a boundary value (0, 1, the largest value the field holds, the sign bit, ...), the way a
hand-made file would, with checksums recomputed where the container checks them (Ogg pages), so the
parser reads the value instead of dropping the page. `CASES` lists every (format, field, value)
once; `hostile_header` draws them for hypothesis.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable

import numpy as np
import soundfile as sf
from hypothesis import strategies as st

from tests.conftest import DATA

U8 = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF)
U16 = (0, 1, 2, 3, 7, 8, 24, 0x7FFF, 0x8000, 0xFFFF)
U32 = (0, 1, 8000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def set_bits(raw: bytes | bytearray, start: int, width: int, value: int) -> bytes:
    """`raw` with the `width` bits from bit `start` (counted from the first, most significant
    bit) set to `value`, cut to fit: headers are bit fields, written big-endian."""
    bits = int.from_bytes(raw, "big")
    shift = 8 * len(raw) - start - width
    mask = ((1 << width) - 1) << shift
    bits = (bits & ~mask) | ((value & ((1 << width) - 1)) << shift)
    return bits.to_bytes(len(raw), "big")


def _speech(seconds: float = 0.5) -> np.ndarray:
    audio, rate = sf.read(DATA / "speech.flac", dtype="int16")
    return np.asarray(audio[: int(rate * seconds)])


# --- WAV: canonical and WAVE_FORMAT_EXTENSIBLE headers, every field settable ---------------

WAV_FIELDS: dict[str, str] = {
    "riff_size": "I",
    "fmt_size": "I",
    "format_tag": "H",
    "channels": "H",
    "rate": "I",
    "byte_rate": "I",
    "block_align": "H",
    "bits": "H",
    "data_size": "I",
    "cb_size": "H",
    "valid_bits": "H",
    "channel_mask": "I",
    "sub_format": "H",
}


def wav(extensible: bool = False, **fields: int) -> bytes:
    """A WAV of half a second of speech (16 kHz mono 16-bit) with `fields` overriding its header."""
    pcm = _speech().tobytes()
    values = {
        "format_tag": 0xFFFE if extensible else 1,
        "channels": 1,
        "rate": 16_000,
        "byte_rate": 32_000,
        "block_align": 2,
        "bits": 16,
        "data_size": len(pcm),
        "cb_size": 22,
        "valid_bits": 16,
        "channel_mask": 4,
        "sub_format": 1,
    }
    values["fmt_size"] = 40 if extensible else 16
    values["riff_size"] = 4 + 8 + (40 if extensible else 16) + 8 + len(pcm)
    values.update(fields)
    v = {k: values[k] & (0xFFFF if WAV_FIELDS[k] == "H" else 0xFFFFFFFF) for k in values}
    fmt = struct.pack(
        "<HHIIHH", v["format_tag"], v["channels"], v["rate"], v["byte_rate"], v["block_align"], v["bits"]
    )
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += (
            struct.pack("<HHIH", v["cb_size"], v["valid_bits"], v["channel_mask"], v["sub_format"])
            + guid_tail
        )
    header = b"RIFF" + struct.pack("<I", v["riff_size"]) + b"WAVE"
    header += b"fmt " + struct.pack("<I", v["fmt_size"]) + fmt
    return header + b"data" + struct.pack("<I", v["data_size"]) + pcm


def _wav_cases() -> list[tuple[str, bytes]]:
    cases = []
    for extensible in (False, True):
        for name, kind in WAV_FIELDS.items():
            if not extensible and name in ("cb_size", "valid_bits", "channel_mask", "sub_format"):
                continue
            for value in U16 if kind == "H" else U32:
                label = f"wav{'-ext' if extensible else ''} {name}={value:#x}"
                cases.append((label, wav(extensible, **{name: value})))
    return cases


# --- FLAC: the STREAMINFO block's bit fields ----------------------------------------------

# (name, first bit, width) within STREAMINFO (after "fLaC" and the 4-byte block header).
FLAC_FIELDS = (
    ("min_block", 0, 16),
    ("max_block", 16, 16),
    ("min_frame", 32, 24),
    ("max_frame", 56, 24),
    ("rate", 80, 20),
    ("channels_minus_1", 100, 3),
    ("bits_minus_1", 103, 5),
    ("total_samples", 108, 36),
)


def flac(field: str, value: int) -> bytes:
    data = bytearray((DATA / "speech.flac").read_bytes())
    start, width = next((s, w) for n, s, w in FLAC_FIELDS if n == field)
    data[8:26] = set_bits(data[8:26], start, width, value)  # the 144 bits before the MD5
    return bytes(data)


def _flac_cases() -> list[tuple[str, bytes]]:
    cases = []
    for name, _, width in FLAC_FIELDS:
        top = (1 << width) - 1
        for value in sorted({0, 1, 2, 15, 16, top >> 1, top, 655_350 if width == 20 else top}):
            if value <= top:
                cases.append((f"flac {name}={value}", flac(name, value)))
    return cases


# --- MP3: the ID3 tag's size and the first frame header's fields --------------------------


def mp3(field: str, value: int) -> bytes:
    data = bytearray((DATA / "speech.mp3").read_bytes())
    if field == "id3_size":  # four 7-bit bytes
        data[6:10] = bytes((value >> s) & 0x7F for s in (21, 14, 7, 0))
        return bytes(data)
    tag = 10 + sum(data[6 + i] << (21 - 7 * i) for i in range(4))
    shift, width = {
        "version": (19, 2),
        "layer": (17, 2),
        "bitrate": (12, 4),
        "rate": (10, 2),
        "mode": (6, 2),
    }[field]
    data[tag : tag + 4] = set_bits(data[tag : tag + 4], 32 - shift - width, width, value)
    return bytes(data)


def _mp3_cases() -> list[tuple[str, bytes]]:
    cases = [(f"mp3 id3_size={v:#x}", mp3("id3_size", v)) for v in (0, 1, 0x7F, 0xFFFFFFF)]
    for field, top in (("version", 3), ("layer", 3), ("bitrate", 15), ("rate", 3), ("mode", 3)):
        cases += [(f"mp3 {field}={v}", mp3(field, v)) for v in range(top + 1)]
    return cases


# --- Ogg/Opus: the OpusHead fields and the page granule positions, with the CRC redone ----

_OGG_CRC = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else _r << 1
    _OGG_CRC.append(_r & 0xFFFFFFFF)


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _pages(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each Ogg page."""
    pages, at = [], 0
    while at + 27 <= len(data) and data[at : at + 4] == b"OggS":
        segments = data[at + 26]
        end = at + 27 + segments + sum(data[at + 27 : at + 27 + segments])
        pages.append((at, end))
        at = end
    return pages


def _reseal(data: bytearray, start: int, end: int) -> None:
    data[start + 22 : start + 26] = b"\x00\x00\x00\x00"
    data[start + 22 : start + 26] = struct.pack("<I", _ogg_crc(bytes(data[start:end])))


OPUS_HEAD = {"channels": (9, "B"), "pre_skip": (10, "H"), "input_rate": (12, "I"), "mapping": (18, "B")}


def ogg(field: str, value: int) -> bytes:
    data = bytearray((DATA / "speech.ogg").read_bytes())
    pages = _pages(bytes(data))
    if field in OPUS_HEAD:
        start, end = pages[0]
        head = bytes(data).index(b"OpusHead")
        offset, kind = OPUS_HEAD[field]
        size = struct.calcsize(kind)
        data[head + offset : head + offset + size] = struct.pack("<" + kind, value & ((1 << 8 * size) - 1))
        _reseal(data, start, end)
    else:  # "first_granule" / "last_granule": the sample position a page claims
        start, end = pages[2] if field == "first_granule" else pages[-1]
        data[start + 6 : start + 14] = struct.pack("<Q", value & (2**64 - 1))
        _reseal(data, start, end)
    return bytes(data)


def _ogg_cases() -> list[tuple[str, bytes]]:
    cases = []
    for field, (_, kind) in OPUS_HEAD.items():
        for value in {"B": U8, "H": U16, "I": U32}[kind]:
            cases.append((f"ogg {field}={value:#x}", ogg(field, value)))
    for field in ("first_granule", "last_granule"):
        for value in (0, 1, 2**31, 2**63 - 1, 2**64 - 1):
            cases.append((f"ogg {field}={value:#x}", ogg(field, value)))
    return cases


# --- MP4/M4A: box sizes and the audio fields of mdhd, mp4a, stts, stsz, stco ----------------

# (box, offset after the box type, struct kind)
MP4_FIELDS = {
    "moov_size": ("moov", -8, "I"),
    "mdat_size": ("mdat", -8, "I"),
    "trak_size": ("trak", -8, "I"),
    "mdhd_timescale": ("mdhd", 12, "I"),
    "mdhd_duration": ("mdhd", 16, "I"),
    "mp4a_channels": ("mp4a", 16, "H"),
    "mp4a_sample_size": ("mp4a", 18, "H"),
    "mp4a_rate": ("mp4a", 24, "I"),
    "stts_count": ("stts", 4, "I"),
    "stts_delta": ("stts", 12, "I"),
    "stsz_size": ("stsz", 4, "I"),
    "stsz_count": ("stsz", 8, "I"),
    "stco_count": ("stco", 4, "I"),
    "stco_offset": ("stco", 8, "I"),
    "stsc_count": ("stsc", 4, "I"),
}


def mp4(field: str, value: int, name: str = "speech.m4a") -> bytes:
    data = bytearray((DATA / name).read_bytes())
    box, offset, kind = MP4_FIELDS[field]
    at = bytes(data).index(box.encode()) + 4 + offset
    size = struct.calcsize(kind)
    data[at : at + size] = struct.pack(">" + kind, value & ((1 << 8 * size) - 1))
    return bytes(data)


def _mp4_cases() -> list[tuple[str, bytes]]:
    cases = []
    for name in ("speech.m4a", "speech.mp4"):
        for field, (_, _, kind) in MP4_FIELDS.items():
            for value in U16 if kind == "H" else U32:
                cases.append((f"{name} {field}={value:#x}", mp4(field, value, name)))
    return cases


# --- AAC in ADTS: every field of the frame header (the sync word aside) -------------------

# (name, first bit after the sync word's 12, width): ISO/IEC 13818-7's adts_fixed_header and
# adts_variable_header.
ADTS_FIELDS = (
    ("id", 12, 1),
    ("layer", 13, 2),
    ("protection_absent", 15, 1),
    ("profile", 16, 2),
    ("rate_index", 18, 4),
    ("private", 22, 1),
    ("channels", 23, 3),
    ("frame_length", 30, 13),
    ("buffer_fullness", 43, 11),
    ("raw_blocks", 54, 2),
)


def _aac_encode(samples: np.ndarray, rate: int, bit_rate: int = 16_000) -> bytes:
    """Mono int16 or float samples as AAC-LC frames in an ADTS stream (FFmpeg's encoder)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        floats = samples.astype(np.float32) / (32768.0 if samples.dtype == np.int16 else 1.0)
        frame = av.AudioFrame.from_ndarray(floats[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def adts_frames(data: bytes) -> list[bytes]:
    """The frames of an ADTS stream, each with its header."""
    frames, at = [], 0
    while at + 7 <= len(data) and data[at] == 0xFF and data[at + 1] & 0xF0 == 0xF0:
        length = ((data[at + 3] & 0x03) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
        if length < 7:
            break
        frames.append(data[at : at + length])
        at += length
    return frames


@functools.cache
def _adts_speech() -> bytes:
    audio, rate = sf.read(DATA / "speech.flac", dtype="int16")
    return _aac_encode(np.asarray(audio[: rate // 2]), rate)


def adts(field: str, value: int, every_frame: bool = False) -> bytes:
    """Half a second of speech as ADTS with one header field set, in the first frame or in all."""
    _, start, width = next(f for f in ADTS_FIELDS if f[0] == field)
    frames = adts_frames(_adts_speech())
    for i, frame in enumerate(frames if every_frame else frames[:1]):
        frames[i] = set_bits(frame[:7], start, width, value) + frame[7:]
    return b"".join(frames)


def _adts_cases() -> list[tuple[str, bytes]]:
    cases = []
    for name, _, width in ADTS_FIELDS:
        top = (1 << width) - 1
        values = range(top + 1) if width <= 4 else sorted({0, 1, 6, 7, 8, top >> 1, top})
        for value in values:
            for every in (False, True):
                label = f"adts {name}={value}" + (" in every frame" if every else "")
                cases.append((label, adts(name, value, every)))
    return cases


def surround(container: str, codec: str, layout: str = "7.1", seconds: float = 1.0) -> bytes:
    """A tone on each channel of `layout` (a different pitch each), encoded by FFmpeg.

    The frame is handed over packed: PyAV cannot fill a planar frame of eight channels or more."""
    import av

    rate = 48_000
    channels = len(av.AudioLayout(layout).channels)
    t = np.arange(int(rate * seconds)) / rate
    tones = np.stack([0.3 * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(channels)])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        packed = np.ascontiguousarray(tones.T, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def looped_aac(seconds: float = 58.0, frames: int = 4, rate: int = 8_000, offset: float = 0.5) -> bytes:
    """A few AAC frames of speech played over and over: a syllable repeated for `seconds`.

    Cheap to make and small (AAC frames of a second's speech at 8 kHz, repeated), it decodes to
    ordinary-sounding audio that drives Whisper into a repetition loop on every decoding attempt:
    the class of input whose transcription cost, not its size, is the attack."""
    audio, file_rate = sf.read(DATA / "speech.flac", dtype="float32")
    import soxr

    speech = soxr.resample(np.asarray(audio), file_rate, rate)
    encoded = adts_frames(_aac_encode(speech, rate, bit_rate=8_000))
    first = int(offset * rate / 1024)
    piece = encoded[first : first + frames]
    count = int(seconds * rate / 1024)
    return b"".join(piece[i % len(piece)] for i in range(count))


def flac_rate_bomb(rate: int = 384_000, seconds: float = 50.0) -> bytes:
    """A small FLAC of constant frames at a high rate: tiny on disk, huge when decoded as is."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as out:
        block = np.full(rate, 0.25, dtype=np.float32)
        for _ in range(int(seconds)):
            out.write(block)
    return buffer.getvalue()


_BUILDERS: tuple[Callable[[], list[tuple[str, bytes]]], ...] = (
    _wav_cases,
    _flac_cases,
    _mp3_cases,
    _ogg_cases,
    _mp4_cases,
    _adts_cases,
)
CASES: list[tuple[str, bytes]] = [case for build in _BUILDERS for case in build()]
"""Every (label, file) once: a few hundred files, each one field at one boundary value."""

hostile_header = st.sampled_from(CASES)
