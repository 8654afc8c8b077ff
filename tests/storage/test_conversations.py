from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.app.core.errors import StorageFullError, StorageOpenError
from backend.app.services.outputs import OutputStore
from backend.app.storage.conversations import MIGRATIONS, ConversationStore
from backend.app.storage.protocols import ConversationStorage
from backend.app.storage.rows import Turn
from tests.mounts import fill, tmpfs

"""The conversation store's contract, run against both backends (SQLite, the default, and a real
PostgreSQL server), then what is particular to SQLite."""


@pytest.fixture
def sqlite_store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "data" / "conversations.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConversationStorage]:
    if request.param == "sqlite":
        opened: ConversationStorage = ConversationStore(tmp_path / "data" / "conversations.db")
    else:
        from backend.app.storage.postgres import PostgresStore

        opened = PostgresStore(request.getfixturevalue("postgres").new_database())
    yield opened
    opened.close()


def test_schema_is_versioned_and_wal(sqlite_store: ConversationStore) -> None:
    store = sqlite_store
    assert store.schema_version == len(MIGRATIONS)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    assert ConversationStore(store.path).schema_version == len(MIGRATIONS)  # reopening migrates nothing


def test_cut_last_reply_rewrites_only_the_conversations_last_reply(store: ConversationStorage) -> None:
    store.add_turns(
        "c1", [Turn("user", "Hi."), Turn("assistant", "Hello there, how are you?", audio_file="x.wav")]
    )
    store.add_turns("c1", [Turn("user", "Tell me more."), Turn("assistant", "Well, it is a long story.")])
    store.add_turns("c2", [Turn("user", "Other."), Turn("assistant", "Another conversation's reply.")])
    assert store.cut_last_reply("c1", "Well, it")
    turns = store.turns("c1")
    assert [(t.text, t.interrupted) for t in turns if t.role == "assistant"] == [
        ("Hello there, how are you?", False),
        ("Well, it", True),
    ]
    assert turns[-1].audio_file is None and turns[1].audio_file == "x.wav"
    assert [t.text for t in store.turns("c2")] == ["Other.", "Another conversation's reply."]
    assert not store.cut_last_reply("unknown", "anything")
    store.add_turns("c3", [Turn("user", "Only a question.")])
    assert not store.cut_last_reply("c3", "nothing to cut")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StorageOpenError, match="newer"):
        ConversationStore(path)


def test_turns_round_trip_with_their_metadata(store: ConversationStorage) -> None:
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


def test_pages_are_newest_first(store: ConversationStorage) -> None:
    for i in range(5):
        store.add_turns(f"c{i}", [Turn("user", f"q{i}")])
    store.add_turns("c1", [Turn("assistant", "a1")])  # c1 becomes the most recent
    page, total = store.page(limit=3, offset=0)
    assert total == 5 and [c.id for c in page] == ["c1", "c4", "c3"]
    assert [c.id for c in store.page(limit=3, offset=3)[0]] == ["c2", "c0"]


def test_update_and_clear(store: ConversationStorage) -> None:
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


def test_delete_returns_audio_files_and_cascades(store: ConversationStorage) -> None:
    store.add_turns("c", [Turn("user", "hi"), Turn("assistant", "yo", audio_file="f.wav")])
    assert store.delete("c") == ["f.wav"]
    assert store.get("c") is None and store.turns("c") == []
    assert store.delete("c") is None


def test_concurrent_writers_lose_nothing(store: ConversationStorage) -> None:
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


def test_referenced_audio(store: ConversationStorage) -> None:
    store.add_turns("c", [Turn("assistant", "old", audio_file="old.wav", created_at=100.0)])
    store.add_turns("c", [Turn("assistant", "new", audio_file="new.wav")])
    assert store.referenced_audio(newer_than=1000.0) == {"new.wav"}


# --- a database that cannot be used, and a disk that fills up -------------------------------


def a_database_with_turns(path: Path, turns: int = 400) -> bytes:
    store = ConversationStore(path)
    for i in range(turns):
        store.add_turns(f"c{i % 7}", [Turn("user", f"question {i} " * 20), Turn("assistant", "answer " * 30)])
    store.close()
    return path.read_bytes()


def _damaged(path: Path, how: str) -> None:
    data = a_database_with_turns(path)
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "overwritten":
        path.write_bytes(bytes(range(256)) * (len(data) // 256))
    elif how == "garbage page":  # the header is fine; one page in the middle is not
        page = 4096
        middle = (len(data) // page // 2) * page
        path.write_bytes(data[:middle] + b"\xa5" * page + data[middle + page :])
    elif how == "a directory":
        path.unlink()
        path.mkdir()
    elif how == "empty text file":
        path.write_text("not a database\n")


@pytest.mark.parametrize(
    "how", ["truncated", "overwritten", "garbage page", "a directory", "empty text file"]
)
def test_a_database_that_cannot_be_used_is_refused_at_open_naming_the_file(tmp_path: Path, how: str) -> None:
    path = tmp_path / "conversations.db"
    _damaged(path, how)
    with pytest.raises(StorageOpenError) as refused:
        ConversationStore(path)
    assert str(path) in str(refused.value)
    if how != "a directory":
        assert "Move the file aside" in str(refused.value)


def test_a_read_only_data_dir_is_refused_at_open(tmp_path: Path) -> None:
    data = a_database_with_turns(tmp_path / "seed.db", turns=3)
    with (
        tmpfs(tmp_path / "ro", 4096, read_only=True, seed={"conversations.db": data}) as ro,
        pytest.raises(StorageOpenError, match="must be writable"),
    ):
        ConversationStore(ro / "conversations.db")


def test_a_full_database_is_a_507_and_reported_until_a_write_succeeds(
    sqlite_store: ConversationStore,
) -> None:
    store = sqlite_store
    store.add_turns("c", [Turn("user", "hello")])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL
    with pytest.raises(StorageFullError, match="no space left"):
        store.add_turns("c", [Turn("user", "x" * 100_000)])
    assert store.disk_problem() and "failed" in str(store.disk_problem())
    assert [t.text for t in store.turns("c")] == ["hello"]  # nothing half-written
    store._db.execute("PRAGMA max_page_count = 1073741823")
    store.add_turns("c", [Turn("user", "again")])
    assert store.disk_problem() is None


def test_a_really_full_disk_is_a_507_for_turns_and_reply_audio(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", 2048) as disk:
        store = ConversationStore(disk / "conversations.db", min_free_bytes=256 * 1024)
        outputs = OutputStore(disk / "outputs", 1, 10, min_free_mb=0.25)
        store.add_turns("c", [Turn("user", "before the disk filled")])
        assert store.disk_problem() is None and outputs.disk_problem() is None
        fill(disk)
        with pytest.raises(StorageFullError):  # refused up front, before any work
            store.require_room()
        with pytest.raises(StorageFullError):
            outputs.require_room()
        assert store.disk_problem() and outputs.disk_problem()
        with pytest.raises(StorageFullError):  # and if the write is tried all the same
            store.add_turns("c", [Turn("user", "y" * 500_000)])
        with pytest.raises(StorageFullError):
            outputs.save(b"\0" * 500_000, "wav")
        assert not [p for p in (disk / "outputs").iterdir()]  # no partial file left
        (disk / "filler").unlink()
        assert [t.text for t in store.turns("c")] == ["before the disk filled"]
        store.close()


# --- what both backends must do alike ---------------------------------------------------------


def test_sql_looking_ids_and_text_are_stored_verbatim(store: ConversationStorage) -> None:
    hostile = "x'); DROP TABLE turns; --"
    odd = "%s %(x)s ? $1 \\ ' \" 😀"
    store.add_turns("Robert_-1", [Turn("user", hostile), Turn("assistant", odd)])
    assert [t.text for t in store.turns("Robert_-1")] == [hostile, odd]
    assert store.get("Robert_-1") is not None and store.turns("nobody") == []
    store.add_turns("nul", [Turn("user", "a\x00b")])  # PostgreSQL's text holds no NUL
    assert store.turns("nul")[0].text in ("a\x00b", "a\ufffdb")


def test_casts_round_trip_and_are_bounded(store: ConversationStorage) -> None:
    from backend.app.core.errors import ConflictError

    assert store.casts.put("duo", {"1": "en-Eve_woman.wav", "Alice": "Joe"}, max_casts=2)
    assert not store.casts.put("duo", {"1": "en-Joe_man.wav"}, max_casts=2)  # replaced, not new
    assert store.casts.put("trio", {"1": "x"}, max_casts=2)
    with pytest.raises(ConflictError):
        store.casts.put("quartet", {"1": "x"}, max_casts=2)
    got = store.casts.get("duo")
    assert got is not None and got.speakers == {"1": "en-Joe_man.wav"}
    assert [c.name for c in store.casts.all()] == ["duo", "trio"]
    assert store.casts.delete("duo") and not store.casts.delete("duo")


def test_a_conversation_lock_is_one_holder_at_a_time(store: ConversationStorage) -> None:
    first = store.try_lock("c")
    assert first is not None
    second = store.try_lock("c")
    if store.shared:  # across processes: a second holder waits
        assert second is None
        other = store.try_lock("d")
        assert other is not None
        other.release()
        first.release()
        again = store.try_lock("c")
        assert again is not None
        again.release()
    else:  # one process: the in-process lock (services/history.py) is the whole story
        assert second is not None


def test_replicas_that_start_at_once_migrate_the_schema_once(postgres: Any) -> None:
    import psycopg
    from psycopg.rows import dict_row

    from backend.app.storage.postgres import PostgresStore
    from backend.app.storage.postgres_schema import MIGRATIONS as PG_MIGRATIONS
    from backend.app.storage.postgres_schema import migrate

    url = postgres.new_database()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                migrate(conn, "test")
        except BaseException as e:  # collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = PostgresStore(url)
    try:
        assert store.schema_version == len(PG_MIGRATIONS)
        with store.connection() as conn:
            assert conn.execute("SELECT COUNT(*) AS n FROM schema_version").fetchone() == {"n": 1}
    finally:
        store.close()


def test_a_postgres_schema_newer_than_the_server_stops_start_up(postgres: Any) -> None:
    import psycopg

    from backend.app.storage.postgres import PostgresStore
    from backend.app.storage.postgres_schema import MIGRATIONS as PG_MIGRATIONS

    url = postgres.new_database()
    PostgresStore.check(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (len(PG_MIGRATIONS) + 1,))
    with pytest.raises(StorageOpenError, match="newer"):
        PostgresStore.check(url)
