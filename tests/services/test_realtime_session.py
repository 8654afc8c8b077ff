"""The realtime session beneath every realtime transport, driven directly (no WebSocket): real
speech into the real models, and what the session tells its listener, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio
from backend.app.audio.types import Audio
from backend.app.container import Services
from backend.app.core.config import VADSettings
from backend.app.core.errors import AppError
from backend.app.core.values import SynthesisRequest, TranscribeOptions, Transcription
from backend.app.services.realtime.config import ReplyOptions, SessionConfig, SessionError
from backend.app.services.realtime.listener import CutReason
from backend.app.services.realtime.session import RealtimeSession
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn
from backend.app.text.wer import word_error_rate
from tests.conftest import DATA, SENTENCE, SYNTH_WER, make_settings, realtime_services


class Recorder:
    """A listener that keeps what it is told, as (what, detail) in order."""

    def __init__(self) -> None:
        self.told: list[tuple[str, Any]] = []
        self.ended = asyncio.Event()
        self.replying = asyncio.Event()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.told]

    def of(self, kind: str) -> list[Any]:
        return [detail for k, detail in self.told if k == kind]

    async def speech_started(self, at_s: float) -> None:
        self.told.append(("speech_started", at_s))

    async def speech_stopped(self, utterance: Audio, at_s: float, committed: bool) -> None:
        self.told.append(("speech_stopped", committed))
        self.told.append(("speech_stopped_at", at_s))

    async def partial_transcript(self, text: str) -> None:
        self.told.append(("partial", text))

    async def transcribed(self, transcription: Transcription, stt_ms: float) -> None:
        self.told.append(("transcribed", transcription.text))

    async def transcription_failed(self, error: AppError) -> None:
        self.told.append(("transcription_failed", error.code))
        self.ended.set()

    async def user_text(self, text: str) -> None:
        self.told.append(("user_text", text))

    async def reply_started(self) -> None:
        self.told.append(("reply_started", None))

    async def reply_text(self, delta: str) -> None:
        self.told.append(("reply_text", delta))
        self.replying.set()

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        self.told.append(("reply_audio", piece.audio.duration))

    async def reply_finished(self, turn: Turn) -> None:
        self.told.append(("reply_finished", turn))
        self.ended.set()

    async def reply_cut(self, said: str, reason: CutReason) -> None:
        self.told.append(("reply_cut", (said, reason)))
        self.ended.set()

    async def reply_failed(self, error: AppError) -> None:
        self.told.append(("reply_failed", error.code))
        self.ended.set()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio((DATA / "speech.wav").read_bytes(), 16000).samples


@pytest.fixture
def rt(services: Services, tmp_path: Path) -> Services:
    return realtime_services(services, make_settings(tmp_path), chat_tokens=16)


Scenario = Callable[[RealtimeSession, Recorder], Awaitable[None]]


def run(rt: Services, scenario: Scenario, conversation_id: str, config: SessionConfig) -> Recorder:
    recorder = Recorder()

    async def go() -> None:
        async with rt.realtime.session(recorder, conversation_id) as session:
            session.configure(config)
            await asyncio.wait_for(scenario(session, recorder), 120)

    asyncio.run(go())
    return recorder


COMMITTED = SessionConfig(vad=None, options=TranscribeOptions(language="en"))


def test_a_committed_utterance_is_heard_answered_spoken_and_stored(rt: Services, speech: np.ndarray) -> None:
    async def scenario(session: RealtimeSession, told: Recorder) -> None:
        for start in range(0, len(speech), 3200):
            await session.feed(speech[start : start + 3200])
        await session.commit()
        await told.ended.wait()
        await session.stop()

    told = run(rt, scenario, "rs-committed", COMMITTED)
    kinds = told.kinds()
    assert kinds[0] == "speech_stopped" and told.of("speech_stopped") == [True]
    assert kinds.index("transcribed") < kinds.index("reply_started") < kinds.index("reply_audio")
    assert kinds[-1] == "reply_finished"
    (heard,) = told.of("transcribed")
    assert word_error_rate(SENTENCE, heard) <= SYNTH_WER, heard
    (turn,) = told.of("reply_finished")
    assert turn.reply == "".join(told.of("reply_text")).strip() and sum(told.of("reply_audio")) > 0.2
    stored = rt.history.store.turns("rs-committed")
    assert [(t.role, t.text) for t in stored] == [("user", heard), ("assistant", turn.reply)]


def test_typed_items_are_stored_in_order_before_the_reply_asked_for(rt: Services) -> None:
    async def scenario(session: RealtimeSession, told: Recorder) -> None:
        await session.add_text("My cat is called Tom.")
        await session.add_text("What is my cat called?")
        await session.respond(ReplyOptions(speak=False))
        await told.ended.wait()

    told = run(rt, scenario, "rs-typed", COMMITTED)
    assert told.of("user_text") == ["My cat is called Tom.", "What is my cat called?"]
    assert told.kinds().index("user_text") < told.kinds().index("reply_started")
    assert not told.of("reply_audio") and told.kinds()[-1] == "reply_finished"
    stored = rt.history.store.turns("rs-typed")
    assert [t.role for t in stored] == ["user", "user", "assistant"]


def test_a_second_reply_is_refused_while_one_is_under_way_and_a_cancel_cuts_it(rt: Services) -> None:
    async def scenario(session: RealtimeSession, told: Recorder) -> None:
        await session.add_text("Tell me a long story about a dragon.")
        await session.respond()
        await told.replying.wait()
        with pytest.raises(SessionError) as refused:
            await session.respond()
        assert refused.value.code == "conversation_already_has_active_response"
        assert await session.cancel()
        assert not await session.cancel()  # nothing left to cut

    told = run(rt, scenario, "rs-cut", COMMITTED)
    ((said, reason),) = told.of("reply_cut")
    assert reason == "client_cancelled" and "reply_finished" not in told.kinds()
    stored = rt.history.store.turns("rs-cut")
    assert [t.role for t in stored] == ["user", "assistant"]
    assert stored[1].interrupted and stored[1].text == said


def test_a_commit_of_too_little_audio_is_refused_and_the_session_goes_on(rt: Services) -> None:
    async def scenario(session: RealtimeSession, told: Recorder) -> None:
        await session.feed(np.zeros(800, np.float32))  # 50 ms
        with pytest.raises(SessionError) as refused:
            await session.commit()
        assert refused.value.code == "input_audio_buffer_commit_empty"
        await session.add_text("Hello.")
        await session.respond(ReplyOptions(speak=False))
        await told.ended.wait()

    told = run(rt, scenario, "rs-short", COMMITTED)
    assert told.kinds()[-1] == "reply_finished" and "speech_stopped" not in told.kinds()


SEMANTIC = SessionConfig(
    vad=VADSettings(turn_detection="semantic", turn_max_silence_ms=2500),
    respond=False,  # transcribe and store only: the turn's end is what is measured
    options=TranscribeOptions(language="en"),
)


def _paced(rt: Services, conversation_id: str, audio: np.ndarray) -> Recorder:
    """Feed `audio` in 32 ms chunks at real time (the session's clock is the audio fed; the
    transcript made during a pause takes wall time), then stop."""

    async def scenario(session: RealtimeSession, told: Recorder) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for index, start in enumerate(range(0, len(audio), 512)):
            await session.feed(audio[start : start + 512])
            await asyncio.sleep(max(0.0, began + (index + 1) * 0.032 - loop.time()))
        await session.stop()

    recorder = Recorder()

    async def go() -> None:
        async with rt.realtime.session(recorder, conversation_id) as session:
            session.configure(SEMANTIC)
            await asyncio.wait_for(scenario(session, recorder), 120)

    asyncio.run(go())
    return recorder


def test_a_finished_question_ends_its_turn_by_meaning_and_a_hanging_one_waits(rt: Services) -> None:
    """Semantic turns: a question that sounds finished, and whose words do not hang, ends soon
    after the speech; "Send a message to" leaves its words hanging (whether or not the voice's final
    fall makes the end-of-turn model hear it finished) and waits for more, here until the silence
    ceiling, as "Could you please tell me" does, whose last word could end a sentence but whose
    words the embedded SmolLM2 reads as a message that goes on. (Not "What is bigger than":
    Moonshine now and then hears "then".)"""
    if rt.realtime.end_of_turn is None:
        pytest.fail("the end-of-turn model did not load")
    from backend.app.audio.decode import resample

    def said(text: str) -> np.ndarray:
        # Piper's joe: its speech runs to the clip's end, so the pause is measured from there.
        return resample(rt.tts.backend.synthesize(SynthesisRequest(text, speaker="joe")), 16000).samples

    lead = np.zeros(8000, np.float32)
    cases = (
        ("How tall is the Eiffel Tower?", False),
        ("Send a message to", True),  # the word list's
        ("Could you please tell me", True),  # the words' model's: "me" can end a sentence
    )
    for text, hangs in cases:
        speech = said(text)
        told = _paced(
            rt, f"rs-semantic-{hangs}", np.concatenate([lead, speech, np.zeros(4 * 16000, np.float32)])
        )
        stopped = [detail for kind, detail in told.told if kind == "speech_stopped_at"]
        assert len(stopped) == 1, told.kinds()
        after = stopped[0] - (len(lead) + len(speech)) / 16000
        if hangs:
            assert after > 2.4, (
                after,
                told.of("transcribed"),
            )  # TURN_MAX_SILENCE_MS (2.5 s here), less the pad's slack
        else:
            # the voice and the words agreed; 2.5 s would be the ceiling
            assert after < 1.6, (after, told.of("transcribed"), told.kinds())
        assert told.of("transcribed")
