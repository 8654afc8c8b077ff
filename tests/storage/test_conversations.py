from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from backend.app.storage.conversations import MIGRATIONS, ConversationStore, Turn


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "data" / "conversations.db")


def test_schema_is_versioned_and_wal(store: ConversationStore) -> None:
    assert store.schema_version == len(MIGRATIONS)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    assert ConversationStore(store.path).schema_version == len(MIGRATIONS)  # reopening migrates nothing


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        ConversationStore(path)


def test_turns_round_trip_with_their_metadata(store: ConversationStore) -> None:
    store.add_turns(
        "c1",
        [
            Turn("user", "Hello there, how are you today?", language="en", timings={"stt_ms": 12.5}),
            Turn(
                "assistant",
                "Fine, thanks.",
                voice="en-Joe_man.wav",
                audio_file="a" * 32 + ".wav",
                timings={"llm_ms": 3.0, "tts_ms": 4.0},
            ),
        ],
    )
    turns = store.turns("c1")
    assert [(t.role, t.text) for t in turns] == [
        ("user", "Hello there, how are you today?"),
        ("assistant", "Fine, thanks."),
    ]
    assert turns[0].language == "en" and turns[0].timings == {"stt_ms": 12.5}
    assert turns[1].voice == "en-Joe_man.wav" and turns[1].audio_file == "a" * 32 + ".wav"
    assert turns[0].created_at > 0
    conversation = store.get("c1")
    assert conversation is not None and conversation.turn_count == 2
    assert conversation.title == "Hello there, how are you today?"
    assert [t.text for t in store.turns("c1", limit=1)] == ["Fine, thanks."]


def test_pages_are_newest_first(store: ConversationStore) -> None:
    for i in range(5):
        store.add_turns(f"c{i}", [Turn("user", f"q{i}")])
    store.add_turns("c1", [Turn("assistant", "a1")])  # c1 becomes the most recent
    page, total = store.page(limit=3, offset=0)
    assert total == 5 and [c.id for c in page] == ["c1", "c4", "c3"]
    assert [c.id for c in store.page(limit=3, offset=3)[0]] == ["c2", "c0"]


def test_update_and_clear(store: ConversationStore) -> None:
    store.add_turns("c", [Turn("user", "hi")])
    updated = store.update("c", title="Kitchen", system_prompt="Be brief.", voice="en-Joe_man.wav")
    assert updated is not None and (updated.title, updated.system_prompt, updated.voice) == (
        "Kitchen",
        "Be brief.",
        "en-Joe_man.wav",
    )
    cleared = store.update("c", clear=["voice"])
    assert cleared is not None and cleared.voice is None and cleared.system_prompt == "Be brief."
    assert store.update("missing", title="x") is None


def test_delete_returns_audio_files_and_cascades(store: ConversationStore) -> None:
    store.add_turns("c", [Turn("user", "hi"), Turn("assistant", "yo", audio_file="f.wav")])
    assert store.delete("c") == ["f.wav"]
    assert store.get("c") is None and store.turns("c") == []
    assert store.delete("c") is None


def test_concurrent_writers_lose_nothing(store: ConversationStore) -> None:
    def write(n: int) -> None:
        for i in range(25):
            store.add_turns(f"c{n % 3}", [Turn("user", f"{n}-{i}"), Turn("assistant", "ok")])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(store.turns(f"c{k}")) for k in range(3)) == 6 * 25 * 2
    for k in range(3):  # each pair stays together
        roles = [t.role for t in store.turns(f"c{k}")]
        assert roles == ["user", "assistant"] * (len(roles) // 2)


def test_referenced_audio(store: ConversationStore) -> None:
    store.add_turns("c", [Turn("assistant", "old", audio_file="old.wav", created_at=100.0)])
    store.add_turns("c", [Turn("assistant", "new", audio_file="new.wav")])
    assert store.referenced_audio(newer_than=1000.0) == {"new.wav"}
