"""The page at `/` in a real browser: Debian's headless Chromium, driven by Playwright, talking to the
real server and models. The microphone is Chromium's fake capture device playing a speech WAV, so
every turn goes through the browser's own recording (MediaRecorder / Web Audio), the server's
STT -> LLM -> TTS, and the browser's playback.

Runs when Chromium is installed (`make test` installs it on Debian); otherwise skipped, saying so.
Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from backend.app.text.wer import word_error_rate
from tests.conftest import DATA, REPO, SENTENCE
from tests.server import server_dir, start_server, stop_server

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "SKIPPED: Chromium is not installed, so the page was not tested in a browser "
        "(on Debian: apt-get install chromium; `make test` does this when it runs as root)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)"
)
websockets_sync = pytest.importorskip("websockets.sync.client")

ARTIFACTS = REPO / "tests" / "artifacts"
API_KEY = "page-test-key"
TURN_TIMEOUT_MS = 90_000
HOLD_S = 4.5  # the speech in the fake microphone ends at 3.8 s
MAX_WER = 0.25

# As root in a sandbox without a network: the probe-tested headless flags.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _fake_microphone(path: Path) -> Path:
    """0.5 s of silence, the test sentence, 12 s of silence: 16-bit mono 48 kHz, played once."""
    audio, rate = sf.read(DATA / "speech.wav", dtype="float32", always_2d=True)
    speech = soxr.resample(audio.mean(axis=1), rate, 48_000)
    silence = np.zeros(48_000 // 2, dtype=np.float32)
    sf.write(path, np.concatenate([silence, speech, np.zeros(48_000 * 12, np.float32)]), 48_000, "PCM_16")
    return path


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return server_dir(tmp_path_factory, "browser")


@pytest.fixture(scope="module")
def server(server_root: Path) -> Iterator[str]:
    process, base = start_server(server_root, API_KEY=API_KEY, WS_MAX_SESSIONS="1", LLM_MAX_TOKENS="40")
    try:
        yield base
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with sync_api.sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    wav = _fake_microphone(tmp_path_factory.mktemp("mic") / "speech.wav")
    fake_media = [
        "--use-fake-ui-for-media-stream",  # grant the microphone without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS + fake_media)
    try:
        yield launched
    finally:
        launched.close()


def _new_page(browser: Any, base: str, *, key: str | None = API_KEY, **context: Any) -> Any:
    ctx = browser.new_context(base_url=base, **context)
    if key is not None:
        ctx.add_init_script(f"localStorage.setItem('voice-dialogue.api-key', {json.dumps(key)})")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Script errors only: the browser also logs refused requests (a 401 before the key, a busy
    # server), which the page handles.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and _scripted(m.text) else None)
    page.errors = errors
    page.goto("/")
    return page


def _scripted(text: str) -> bool:
    return not text.startswith("Failed to load resource") and "WebSocket connection to" not in text


def _ready(page: Any) -> None:
    page.wait_for_selector('#server-status[data-state="ok"]', timeout=30_000)
    page.wait_for_selector("#voice-select option", state="attached", timeout=10_000)


def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"page-{name}.png", full_page=True)


def _assert_whole_turn(page: Any) -> dict[str, Any]:
    """A transcript close to what the fake microphone said, a reply, its audio played, and timings."""
    page.wait_for_selector(".message.assistant[data-played-seconds]", timeout=TURN_TIMEOUT_MS)
    page.wait_for_selector(".message.assistant .timings", timeout=TURN_TIMEOUT_MS)
    transcript = page.locator(".message.user .text").last.inner_text()
    reply = page.locator(".message.assistant .text").last.inner_text()
    played = float(page.locator(".message.assistant").last.get_attribute("data-played-seconds"))
    timings = page.locator(".message.assistant").last.locator(".timings li")
    keys = {timings.nth(i).get_attribute("data-key") for i in range(timings.count())}
    assert word_error_rate(SENTENCE, transcript) <= MAX_WER, transcript
    assert reply.strip()
    assert played > 0.1
    assert {"stt_ms", "llm_ms", "tts_ms", "first_audio_ms", "total_ms"} <= keys
    return {"transcript": transcript, "reply": reply, "played_s": played}


def _wait_for(condition: Any, timeout_s: float = 20) -> None:
    """Poll from Python: the page's CSP (no eval) rules out Playwright's wait_for_function."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _assert_words_followed(page: Any) -> None:
    """The reply's words: lit one after another while it played, all heard at its end."""
    words = page.locator(".message.assistant .words").last
    words.wait_for(state="attached", timeout=TURN_TIMEOUT_MS)
    lit: list[str] = []
    deadline = time.monotonic() + TURN_TIMEOUT_MS / 1000
    spans = words.locator("span:not(.cut-mark)")
    while time.monotonic() < deadline:
        current = words.get_attribute("data-current-word") or ""
        if current and (not lit or lit[-1] != current):
            lit.append(current)
        count = spans.count()
        done = page.locator(".message.assistant .timings").count() > 0  # every piece has come
        if done and count and words.get_attribute("data-heard-words") == str(count):
            break
        time.sleep(0.05)
    texts = [spans.nth(i).inner_text() for i in range(spans.count())]
    assert len(lit) >= 2 and set(lit) <= set(texts), (lit, texts)  # followed the voice, word by word
    assert words.get_attribute("data-heard-words") == str(len(texts))
    reply = page.locator(".message.assistant .text").last.inner_text()
    assert word_error_rate(reply, " ".join(texts)) <= 0.2, (reply, texts)


def _hold_talk(page: Any, seconds: float = HOLD_S, recording: bool = True) -> None:
    """Hold the talk button with the mouse; `recording`: wait until the page records first."""
    box = page.locator("#talk").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    if recording:
        page.wait_for_selector('#talk[data-state="recording"]', timeout=10_000)
    time.sleep(seconds)
    page.mouse.up()


def test_key_prompt_then_push_to_talk_turn(server: str, browser: Any) -> None:
    page = _new_page(browser, server, key=None)
    # No key stored: the page asks for one (its first API call was refused), and keeps it.
    page.wait_for_selector("dialog#settings[open]", timeout=30_000)
    assert "needs an API key" in page.inner_text("#settings-reason")
    page.fill("#api-key", API_KEY)
    page.click("#save-key")
    _ready(page)
    assert page.evaluate("localStorage.getItem('voice-dialogue.api-key')") == API_KEY

    _hold_talk(page)
    _assert_words_followed(page)
    turn = _assert_whole_turn(page)
    page.wait_for_selector(".conversation-list .open[aria-current='true']", timeout=10_000)
    _screenshot(page, "push-to-talk")

    # A reload remembers the key (no dialog); the stored conversation opens with both turns.
    page.reload()
    _ready(page)
    assert not page.locator("dialog#settings").is_visible()
    page.locator(".conversation-list .open").first.click()
    page.wait_for_selector(".message.assistant", timeout=10_000)
    assert page.locator(".message.user .text").first.inner_text() == turn["transcript"]
    assert page.locator(".message.assistant .replay").count() == 1
    assert page.errors == []
    page.context.close()


def test_hands_free_turn(server: str, browser: Any) -> None:
    page = _new_page(browser, server)
    _ready(page)
    page.check("input[name='mode'][value='handsfree']")
    page.click("#talk")
    page.wait_for_selector('#talk[data-state="listening"]', timeout=20_000)
    # While the user speaks, their words so far show, pending, before the turn's transcript.
    partial = page.wait_for_selector(".message.user.pending .text", timeout=20_000).inner_text()
    assert partial.strip()
    _assert_words_followed(page)
    turn = _assert_whole_turn(page)
    assert page.locator(".message.user.pending").count() == 0
    assert page.locator(".message.user").count() == 1  # the partial became the transcript
    assert len(partial) <= len(turn["transcript"]) + 5
    # Over WebRTC (the microphone a WebRTC track, with the browser's echo cancellation on).
    assert page.get_attribute("#talk", "data-transport") == "webrtc"
    _screenshot(page, "hands-free")
    page.click("#talk")  # stop: the session ends and the microphone is let go
    page.wait_for_selector('#talk[data-state="idle"]', timeout=20_000)
    assert page.errors == []
    page.context.close()


def test_hands_free_falls_back_to_the_websocket_without_webrtc(server: str, browser: Any) -> None:
    page = _new_page(browser, server, key=None)
    key = f"localStorage.setItem('voice-dialogue.api-key', {json.dumps(API_KEY)});"
    page.context.add_init_script(key + " delete window.RTCPeerConnection;")
    page.reload()
    _ready(page)
    page.check("input[name='mode'][value='handsfree']")
    page.click("#talk")
    page.wait_for_selector('#talk[data-state="listening"]', timeout=20_000)
    assert page.get_attribute("#talk", "data-transport") == "websocket"
    _assert_words_followed(page)
    _assert_whole_turn(page)
    page.click("#talk")
    page.wait_for_selector('#talk[data-state="idle"]', timeout=20_000)
    page.context.close()


def test_phone_width_and_keyboard_only(server: str, browser: Any) -> None:
    page = _new_page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _ready(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    talk = page.locator("#talk").bounding_box()
    assert talk["width"] >= 44 and talk["y"] + talk["height"] <= 844  # a big target, on screen
    # Tab reaches the talk button; the space bar, held, records a turn.
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "talk":
            break
    assert page.evaluate("document.activeElement.id") == "talk"
    page.keyboard.down("Space")
    page.wait_for_selector('#talk[data-state="recording"]', timeout=10_000)
    time.sleep(HOLD_S)
    page.keyboard.up("Space")
    _assert_whole_turn(page)
    _screenshot(page, "phone")
    # The conversation list is a drawer on a phone, opened and closed from the keyboard.
    page.focus("#toggle-sidebar")
    page.keyboard.press("Enter")
    assert page.locator("#sidebar").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#sidebar").is_visible()
    assert page.errors == []
    page.context.close()


def test_voice_upload_pick_and_delete(server: str, browser: Any) -> None:
    page = _new_page(browser, server)
    _ready(page)
    page.on("dialog", lambda dialog: dialog.accept())  # the "delete this voice?" confirmation
    page.click("#voice-upload-panel summary")
    page.set_input_files("#voice-file", str(REPO / "voices" / "en-Eve_woman.wav"))
    page.fill("#voice-form input[name='name']", "Tester")
    page.click("#voice-form button[type='submit']")
    page.wait_for_selector("#voice-form-status:has-text('Added Tester')", timeout=20_000)
    assert page.input_value("#voice-select") == "Tester"  # the new voice is picked
    assert page.evaluate("JSON.parse(localStorage.getItem('voice-dialogue.prefs')).voice") == "Tester"
    # A bad upload is explained, not swallowed.
    page.set_input_files("#voice-file", str(DATA / "SENTENCE.txt"))
    page.fill("#voice-form input[name='name']", "Broken")
    page.click("#voice-form button[type='submit']")
    _wait_for(lambda: page.inner_text("#voice-form-status") not in ("Uploading…", ""))
    assert "audio" in page.inner_text("#voice-form-status").lower()
    page.click("#delete-voice")
    _wait_for(lambda: page.locator("#voice-select option[value='Tester']").count() == 0)
    assert page.input_value("#voice-select") == ""
    assert page.errors == []
    page.context.close()


@contextmanager
def _the_only_session(server: str) -> Iterator[None]:
    """Hold the server's one realtime slot (WS_MAX_SESSIONS=1), waiting for earlier ones to end."""
    url = server.replace("http", "ws") + "/ws/conversation"
    deadline = time.monotonic() + 20
    while True:
        with websockets_sync.connect(url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            if json.loads(ws.recv(timeout=10))["type"] == "ready":
                yield
                return
        assert time.monotonic() < deadline, "an earlier realtime session never ended"
        time.sleep(0.5)


def test_busy_server_is_explained(server: str, browser: Any) -> None:
    with _the_only_session(server):
        page = _new_page(browser, server)
        _ready(page)
        page.check("input[name='mode'][value='handsfree']")
        page.click("#talk")
        page.wait_for_selector("#notice:not([hidden])", timeout=20_000)
        assert "busy" in page.inner_text("#notice-text")
        page.wait_for_selector('#talk[data-state="idle"]', timeout=10_000)
        _screenshot(page, "busy")
        page.context.close()


def test_a_refused_recording_is_kept_and_sent_again(server: str, browser: Any) -> None:
    # The first upload meets a full queue (the server's own 503 answer, replayed by the browser's
    # network layer so that it happens on cue); the recording stays on the page and is sent again.
    page = _new_page(browser, server)
    _ready(page)
    busy = {"error": {"code": "overloaded", "message": "the stt queue is full (1 waiting)"}}
    page.route(
        "**/conversation",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "3"}, content_type="application/json", body=json.dumps(busy)
        ),
    )
    _hold_talk(page)
    page.wait_for_selector("#notice:not([hidden])", timeout=20_000)
    assert "busy" in page.inner_text("#notice-text") and "3 s" in page.inner_text("#notice-text")
    page.unroute("**/conversation")
    page.click(".message.user .retry")
    _assert_whole_turn(page)
    assert page.locator(".message.user").count() == 1  # the failed attempt was replaced
    page.context.close()


def test_denied_microphone_is_explained(server: str, playwright: Any) -> None:
    # A browser without the auto-grant flag, whose context grants nothing: getUserMedia is refused.
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, "--use-fake-device-for-media-stream"]
    )
    try:
        page = _new_page(browser, server, permissions=[])
        _ready(page)
        _hold_talk(page, seconds=0.5, recording=False)  # the microphone is refused: no recording
        page.wait_for_selector("#notice:not([hidden])", timeout=10_000)
        assert "Microphone access was denied" in page.inner_text("#notice-text")
        _screenshot(page, "microphone-denied")
        # Typing still works without a microphone: a reply, spoken.
        page.fill("#text-input", "Say hello.")
        page.keyboard.press("Enter")
        page.wait_for_selector(".message.assistant[data-played-seconds]", timeout=TURN_TIMEOUT_MS)
        assert page.locator(".message.assistant .text").last.inner_text().strip()
        assert page.errors == []
    finally:
        browser.close()


def test_key_travels_only_as_configured(server: str) -> None:
    """The realtime key is a subprotocol the browser can send; the server never echoes it."""
    protocol = "bearer." + base64.urlsafe_b64encode(API_KEY.encode()).decode().rstrip("=")
    url = server.replace("http", "ws") + "/ws/conversation"
    with websockets_sync.connect(url, subprotocols=["voice-dialogue", protocol]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "voice-dialogue"


# English words the page shows that a Chinese reader must not meet (voice names and keys aside).
ENGLISH_UI = ("Hold", "Conversations", "Voices", "Settings", "Ready", "Send", "message", "Push to talk")


def test_the_page_speaks_the_browsers_chinese_and_switches(server: str, browser: Any) -> None:
    page = _new_page(browser, server, locale="zh-TW")
    _ready(page)
    assert page.evaluate("document.documentElement.lang") == "zh-TW"
    assert page.inner_text("h1") == "語音對話"
    assert page.inner_text("#server-status") == "就緒"
    assert page.inner_text("#talk .talk-label") == "按住說話"
    assert page.get_attribute("#text-input", "placeholder") == "…或輸入訊息"
    shown = page.inner_text("header") + page.inner_text(".controls") + page.inner_text("#sidebar")
    assert not [word for word in ENGLISH_UI if word in shown], shown
    # A typed turn: the page's own labels in Chinese, the reply as the model gave it.
    page.fill("#text-input", "你好")
    page.press("#text-input", "Enter")
    page.wait_for_selector(".message.assistant .timings", timeout=TURN_TIMEOUT_MS)
    assert page.locator(".message.user .who").first.inner_text() == "你"
    assert "語音轉文字" not in page.inner_text(".message.assistant .timings")  # a typed turn has no STT
    assert "語言模型" in page.inner_text(".message.assistant .timings")
    _screenshot(page, "zh-TW")

    page.select_option("#ui-language", "zh-CN")
    assert page.inner_text("h1") == "语音对话"
    assert page.inner_text("#talk .talk-label") == "按住说话"
    page.reload()  # the choice is kept, over the browser's language
    _ready(page)
    assert page.inner_text("h1") == "语音对话"
    page.select_option("#ui-language", "en")
    assert page.inner_text("h1") == "Voice dialogue"
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.inner_text("#talk .talk-label") == "Hold to talk"
    assert page.errors == []
    page.context.close()


def test_server_errors_are_shown_in_the_pages_chinese(server: str, browser: Any) -> None:
    """The server's error messages are English: the Chinese page says each in its own words (by
    the error's code), and keeps the server's message as the notice's detail (its tooltip)."""
    page = _new_page(browser, server, locale="zh-CN")
    _ready(page)
    down = {
        "error": {
            "code": "storage_unavailable",
            "message": "the conversation database is unreachable right now",
        }
    }
    page.route(
        "**/chat",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "3"}, content_type="application/json", body=json.dumps(down)
        ),
    )
    page.fill("#text-input", "你好")
    page.press("#text-input", "Enter")
    page.wait_for_selector("#notice:not([hidden])", timeout=20_000)
    notice = page.inner_text("#notice-text")
    assert "数据库" in notice and "3 秒" in notice, notice
    assert not re.search(r"[A-Za-z]", notice), notice
    assert page.get_attribute("#notice-text", "title") == down["error"]["message"]
    failed = page.locator(".message.assistant .text").last.inner_text()
    assert "数据库" in failed and not re.search(r"[A-Za-z]", failed), failed
    _screenshot(page, "zh-CN-error")
    assert page.errors == []
    page.context.close()


def test_a_replys_tool_calls_are_shown(server: str, server_root: Path, browser: Any) -> None:
    """A stored reply that called server-side tools shows each call, its result, and a failed one."""
    from backend.app.storage.conversations import ConversationStore
    from backend.app.storage.rows import Turn

    steps = (
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}', "result": "18 C and sunny"},
        {
            "id": "call_2",
            "name": "set_light",
            "arguments": '{"room": "hall"}',
            "result": "home did not answer",
            "error": True,
        },
    )
    store = ConversationStore(server_root / "data" / "conversations.db")
    store.add_turns(
        "tool-turn",
        [
            Turn("user", "How is the weather in Oslo?"),
            Turn("assistant", "It is 18 degrees and sunny.", tools=steps),
        ],
    )
    store.close()
    page = _new_page(browser, server)
    try:
        _ready(page)
        page.locator(".conversation-list .open[data-id='tool-turn']").click()
        tools = page.locator(".message.assistant .tools li")
        tools.first.wait_for(timeout=10_000)
        texts = tools.all_inner_texts()
        assert "get_weather" in texts[0] and "18 C and sunny" in texts[0], texts
        assert "set_light" in texts[1] and "failed" in tools.nth(1).get_attribute("class"), texts
        _screenshot(page, "tools")
    finally:
        page.close()


def test_a_cut_reply_shows_where_it_was_cut(server: str, browser: Any) -> None:
    """Talking again while the reply plays cuts it: the words heard stay lit, the rest are shown as
    not heard, with a mark between."""
    page = _new_page(browser, server)
    _ready(page)
    _hold_talk(page)
    words = page.locator(".message.assistant .words").last
    words.wait_for(state="attached", timeout=TURN_TIMEOUT_MS)
    _wait_for(lambda: int(words.get_attribute("data-heard-words") or 0) >= 1, TURN_TIMEOUT_MS / 1000)
    _hold_talk(page, 0.5, recording=False)  # pressed again: the answer is interrupted
    page.wait_for_selector(".message.assistant.interrupted .words .cut-mark", timeout=20_000)
    cut = page.locator(".message.assistant.interrupted .words").first
    heard = int(cut.get_attribute("data-cut-after") or 0)
    assert heard >= 1
    assert cut.locator("span.unheard").count() >= 1
    assert cut.locator("span.said").count() == heard
    _screenshot(page, "cut-reply")
    page.context.close()
