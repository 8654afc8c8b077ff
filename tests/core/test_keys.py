"""API keys without the app: the key file, matching, the scope of each path, and the quotas' arithmetic
on injected clocks. The same through the real app, on every transport: tests/api/test_keys.py."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from backend.app.core.auth import ANY_KEY, EVERY_SCOPE, rule_for
from backend.app.core.config import Settings
from backend.app.core.keys import (
    DEFAULT_KEY_NAME,
    SCOPES,
    ApiKey,
    KeyFileError,
    KeyRing,
    Quotas,
    digest_of,
    load_keys,
    parse_keys,
)
from backend.app.core.quotas import DAY_S, Account, KeyLedger, charge_audio, current_account

REPO = Path(__file__).resolve().parents[2]
SECRET = "kitchen-secret-7f3a"


def test_a_key_file_with_every_field() -> None:
    digest = hashlib.sha256(b"admin-secret").hexdigest()
    kitchen, admin = parse_keys(
        f"""
        [[keys]]
        name = "kitchen"
        key = "{SECRET}"
        scopes = ["realtime", "conversation"]
        requests_per_minute = 60
        realtime_sessions = 1
        audio_seconds_per_day = 3600

        [[keys]]
        name = "admin.main_1"
        key_sha256 = "{digest.upper()}"
        """
    )
    assert kitchen.name == "kitchen" and kitchen.digest == hashlib.sha256(SECRET.encode()).digest()
    assert kitchen.scopes == {"realtime", "conversation"}
    assert kitchen.quotas == Quotas(requests_per_minute=60, realtime_sessions=1, audio_seconds_per_day=3600)
    assert admin.digest == bytes.fromhex(digest) and admin.scopes == set(SCOPES)
    assert admin.quotas == Quotas()  # no quota
    assert SECRET not in repr(kitchen)


def test_the_shipped_example_is_a_valid_key_file() -> None:
    listed = parse_keys((REPO / "docs" / "api-keys.example.toml").read_text())
    assert [key.name for key in listed] == ["kitchen", "dictation", "admin", "prometheus"]
    assert listed[3].scopes == {"metrics"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "keys"),
        ("[[keys]\n", "not valid TOML"),
        ('keys = "x"', "keys"),
        (
            f'[[keys]]\nname = "a"\nkey = "{SECRET}"\n[[keys]]\nname = "a"\nkey = "other"',
            "name 'a' is given to two",
        ),
        (
            f'[[keys]]\nname = "a"\nkey = "{SECRET}"\n[[keys]]\nname = "b"\n'
            f'key_sha256 = "{hashlib.sha256(SECRET.encode()).hexdigest()}"',
            "'a' and 'b' are the same key",
        ),
        (
            f'[[keys]]\nname = "a"\nkey = "{SECRET}"\nscopes = ["admin"]',
            "keys[0] ('a').scopes.0: unknown scope",
        ),
        (
            f'[[keys]]\nname = "a"\nkey = "{SECRET}"\nkey_sha256 = "{"0" * 64}"',
            "either `key` or `key_sha256`",
        ),
        ('[[keys]]\nname = "a"', "either `key` or `key_sha256`"),
        (
            f'[[keys]]\nname = "a"\nkey = "{SECRET}"\nrequests_per_minute = "60"',
            "requests_per_minute: Input should",
        ),
        (
            f'[[keys]]\nname = "a"\nkey = "{SECRET}"\nrealtime_sessions = true',
            "realtime_sessions: Input should",
        ),
        (f'[[keys]]\nname = "a"\nkey = "{SECRET}"\nrequests_per_minute = 0', "requests_per_minute"),
        (f'[[keys]]\nname = "a"\nkey = "{SECRET}"\naudio_seconds = 5', "audio_seconds: Extra inputs"),
        (f'[[keys]]\nname = "a b"\nkey = "{SECRET}"', "a name is 1-64 letters"),
        (f'[[keys]]\nkey = "{SECRET}"', "keys[0].name: Field required"),
        ('[[keys]]\nname = "a"\nkey_sha256 = "abc"', "64 hexadecimal digits"),
        ('[[keys]]\nname = "a"\nkey = " padded "', "without spaces at its ends"),
        ('[[keys]]\nname = "a"\nkey = 123456789', "keys[0] ('a').key: Input should be a valid string"),
    ],
)
def test_a_bad_key_file_is_refused_with_the_problem_named_and_no_key_shown(text: str, problem: str) -> None:
    with pytest.raises(KeyFileError) as refused:
        parse_keys(text)
    assert problem in str(refused.value)
    for secret in (SECRET, "123456789", "padded", "other"):
        assert secret not in str(refused.value)


def test_the_setting_is_read_from_api_keys_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "keys.toml"))
    assert Settings(_env_file=None).server.api_keys_file == tmp_path / "keys.toml"  # type: ignore[call-arg]
    monkeypatch.setenv("API_KEYS_FILE", "")
    assert Settings(_env_file=None).server.api_keys_file is None  # type: ignore[call-arg]


def test_api_key_alone_is_the_default_key_with_every_scope_and_no_quota(tmp_path: Path) -> None:
    assert load_keys(None, None) == []
    (default,) = load_keys("s3cret", None)
    assert default == ApiKey(DEFAULT_KEY_NAME, digest_of("s3cret"), frozenset(SCOPES), Quotas())


def test_api_key_and_a_key_file_apply_together(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nname = "kitchen"\nkey = "{SECRET}"\nscopes = ["realtime"]\n')
    assert [key.name for key in load_keys("s3cret", path)] == ["default", "kitchen"]
    # API_KEY's name and secret are taken: the file may use neither.
    path.write_text('[[keys]]\nname = "default"\nkey = "other"\n')
    with pytest.raises(KeyFileError, match="'default' is API_KEY's"):
        load_keys("s3cret", path)
    path.write_text('[[keys]]\nname = "kitchen"\nkey = "s3cret"\n')
    with pytest.raises(KeyFileError, match="same key") as refused:
        load_keys("s3cret", path)
    assert "s3cret" not in str(refused.value) and str(path) in str(refused.value)
    with pytest.raises(KeyFileError, match="cannot be read"):
        load_keys(None, tmp_path / "missing.toml")


def test_matching_compares_every_digest_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing([ApiKey(f"k{i}", digest_of(f"secret-{i}")) for i in range(5)])
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # as core/keys.py calls it
    for supplied, expected in ((b"secret-0", "k0"), (b"secret-4", "k4"), (b"wrong", None), (b"", None)):
        compared.clear()
        found = ring.match(supplied)
        assert (found.name if found else None) == expected
        assert len(compared) == 5  # all of them, whichever matched: no early exit
        assert all(a == digest_of(supplied) and len(a) == len(b) == 32 for a, b in compared)


@pytest.mark.parametrize(
    ("method", "path", "scope", "audio"),
    [
        ("POST", "/stt", "stages", True),
        ("POST", "/tts/", "stages", True),
        ("POST", "/chat", "stages", False),
        ("GET", "/v1/models/Systran/faster-whisper-tiny.en", "stages", False),
        ("POST", "/api/asr/transcribe", "stages", True),
        ("GET", "/api/status", "stages", False),
        ("POST", "/conversation", "conversation", True),
        ("DELETE", "/conversations/abc", "conversation", False),
        ("GET", "/outputs/a.wav", "conversation", False),
        ("WS", "/ws/conversation", "realtime", True),
        ("WS", "/v1/realtime", "realtime", True),
        ("GET", "/voices", ANY_KEY, False),
        ("POST", "/voices", "voices", False),
        ("DELETE", "/voices/Joe", "voices", False),
        ("PUT", "/casts/show", "voices", False),
        ("GET", "/casts/show", ANY_KEY, False),
        ("GET", "/metrics", "metrics", False),
        ("GET", "/openapi.json", ANY_KEY, False),
        ("GET", "/no/such/route", EVERY_SCOPE, False),
        ("GET", "/voices/Joe", EVERY_SCOPE, False),
    ],
)
def test_the_scope_each_path_needs(method: str, path: str, scope: str, audio: bool) -> None:
    rule = rule_for(method, path)
    assert (rule.scope, rule.audio) == (scope, audio)


class Clocks:
    """A monotonic clock and a wall clock (Unix time) that tests move by hand."""

    def __init__(self, wall: float) -> None:
        self.now = 1000.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def account(clocks: Clocks, **quotas: float) -> Account:
    key = ApiKey("kitchen", digest_of(SECRET), quotas=Quotas(**quotas))  # type: ignore[arg-type]
    return KeyLedger([key], lambda: clocks.now, lambda: clocks.wall).accounts["kitchen"]


def test_requests_a_minute_is_a_sliding_window() -> None:
    clocks = Clocks(wall=0)
    usage = account(clocks, requests_per_minute=3)
    for _ in range(3):
        assert usage.admit(audio=False, session=False) is None
        clocks.advance(10)  # admitted at 1000, 1010, 1020
    refused = usage.admit(audio=False, session=False)  # at 1030: three in the last 60 s
    assert refused is not None and (refused.status, refused.code) == (429, "rate_limited")
    assert refused.retry_after_s == 30  # until the one of 1000 leaves the window
    assert refused.message == "key 'kitchen' is over its requests_per_minute quota of 3; retry in 30 s"
    clocks.advance(29.5)
    refused = usage.admit(audio=False, session=False)
    assert refused is not None and refused.retry_after_s == 1  # whole seconds, never 0
    clocks.advance(0.5)  # 1060: the first left the window; refusals did not count in it
    assert usage.admit(audio=False, session=False) is None
    assert usage.admit(audio=False, session=False) is not None
    assert usage.figures().outcomes == {"ok": 4, "rate_limited": 3}


def test_audio_seconds_a_day_refuse_once_reached_until_utc_midnight() -> None:
    clocks = Clocks(wall=20 * DAY_S + 23 * 3600)  # 23:00 UTC
    usage = account(clocks, audio_seconds_per_day=10)
    assert usage.admit(audio=True, session=False) is None
    usage.add_audio("stt", 4)
    usage.add_audio("tts", 5.5)
    assert usage.admit(audio=True, session=False) is None  # 9.5 s: under, served whole whatever it costs
    usage.add_audio("tts", 3)
    refused = usage.admit(audio=True, session=False)
    assert refused is not None and refused.code == "audio_quota_exceeded" and refused.retry_after_s == 3600
    assert "audio_seconds_per_day quota of 10 s" in refused.message
    assert usage.admit(audio=False, session=False) is None  # routes that make no audio still answer
    assert usage.figures().audio_seconds == {"stt": 4, "tts": 8.5}
    assert usage.figures().audio_seconds_today == 12.5
    clocks.advance(3600)  # midnight UTC: a new day
    assert usage.figures().audio_seconds_today == 0
    assert usage.admit(audio=True, session=False) is None


def test_realtime_sessions_are_counted_while_open() -> None:
    usage = account(Clocks(wall=0), realtime_sessions=1)
    assert usage.admit(audio=True, session=True) is None
    refused = usage.admit(audio=True, session=True)
    assert refused is not None and refused.code == "too_many_sessions" and refused.retry_after_s is None
    assert "realtime_sessions quota of 1" in refused.message
    usage.end_session()
    assert usage.admit(audio=True, session=True) is None and usage.sessions == 1


def test_audio_is_charged_to_the_current_requests_key() -> None:
    usage = account(Clocks(wall=0))
    charge_audio("stt", 2.0)  # no key: nothing to charge
    token = current_account.set(usage)
    try:
        charge_audio("stt", 2.0)
        charge_audio("tts", 1.5)
    finally:
        current_account.reset(token)
    assert usage.figures().audio_seconds == {"stt": 2.0, "tts": 1.5}
