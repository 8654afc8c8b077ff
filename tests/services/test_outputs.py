"""Reply audio retention: TTL, size cap, and files still referenced by young stored turns."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.app.container import Services
from backend.app.core.errors import NotFoundError
from backend.app.services.history import ConversationHistory
from backend.app.services.outputs import DatabaseOutputs, OutputStore
from backend.app.storage.conversations import ConversationStore
from backend.app.storage.rows import Turn


def aged(store: OutputStore, size: int, age_hours: float) -> str:
    name = store.save(b"\x00" * size, "wav")
    stamp = time.time() - age_hours * 3600
    os.utime(store.directory / name, (stamp, stamp))
    return name


def test_expired_files_go_unless_protected(tmp_path: Path) -> None:
    store = OutputStore(tmp_path, ttl_hours=24, max_mb=100)
    old, kept_old, fresh = aged(store, 10, 48), aged(store, 10, 48), aged(store, 10, 1)
    (tmp_path / "notes.txt").write_text("not ours")
    assert store.sweep(protected={kept_old}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept_old, fresh, "notes.txt"])
    with pytest.raises(NotFoundError):
        store.path(old)


def test_size_cap_removes_the_oldest_first(tmp_path: Path) -> None:
    store = OutputStore(tmp_path, ttl_hours=24, max_mb=0.25)  # 262,144 bytes
    names = [aged(store, 100_000, hours) for hours in (5, 4, 3, 2, 1)]
    # 500 kB > 256 kB: the oldest unprotected files go, oldest first, until the rest fits.
    assert store.sweep(protected={names[0]}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[4]])


def test_remove_touches_only_generated_names(tmp_path: Path) -> None:
    store = OutputStore(tmp_path, ttl_hours=1, max_mb=1)
    name = store.save(b"x", "mp3")
    (tmp_path / "keep.wav").write_bytes(b"x")
    assert store.remove([name, "keep.wav", "../keep.wav"]) == 1
    assert (tmp_path / "keep.wav").exists()


def test_service_sweep_spares_audio_of_young_turns(services: Services, tmp_path: Path) -> None:
    outputs = OutputStore(tmp_path / "out", ttl_hours=24, max_mb=100)
    store = ConversationStore(tmp_path / "c.db")
    referenced, orphan = aged(outputs, 10, 30), aged(outputs, 10, 30)
    store.add_turns("c", [Turn("assistant", "hi", audio_file=referenced)])  # a turn made just now
    history = ConversationHistory(store, outputs, services.tts.voices)
    swept = dataclasses.replace(services, history=history)
    assert swept.sweep_outputs() == 1
    assert (outputs.directory / referenced).exists() and not (outputs.directory / orphan).exists()


# --- the same rules for reply audio kept in PostgreSQL (DATABASE_URL) ---------------------------


@pytest.fixture
def database_outputs(postgres: Any) -> Iterator[DatabaseOutputs]:
    from backend.app.storage.postgres import PostgresStore

    store = PostgresStore(postgres.new_database())
    yield DatabaseOutputs(store, ttl_hours=24, max_mb=0.25)
    store.close()


def aged_row(outputs: DatabaseOutputs, size: int, age_hours: float) -> str:
    name = outputs.save(b"\x00" * size, "wav")
    with outputs.store.connection(writing=True) as conn:
        conn.execute(
            "UPDATE reply_audio SET created_at = %s WHERE name = %s", (time.time() - age_hours * 3600, name)
        )
    return name


def test_database_audio_is_served_by_name_and_swept_like_files(database_outputs: DatabaseOutputs) -> None:
    outputs = database_outputs
    name = outputs.save(b"RIFF-audio", "wav")
    assert outputs.fetch(name) == b"RIFF-audio"
    for bad in ("../etc/passwd", "x.wav", name.replace(".wav", ".exe"), "0" * 32 + ".wav"):
        with pytest.raises(NotFoundError):
            outputs.fetch(bad)
    old, kept_old = aged_row(outputs, 10, 48), aged_row(outputs, 10, 48)
    assert outputs.sweep(protected={kept_old}) == 1
    with pytest.raises(NotFoundError):
        outputs.fetch(old)
    assert outputs.fetch(kept_old) and outputs.remove([name, "keep.wav"]) == 1


def test_database_audio_size_cap_removes_the_oldest_first(database_outputs: DatabaseOutputs) -> None:
    outputs = database_outputs  # a cap of 262,144 bytes
    names = [aged_row(outputs, 100_000, hours) for hours in (5, 4, 3, 2, 1)]
    assert outputs.sweep(protected={names[0]}) == 3
    with outputs.store.connection() as conn:
        left = {row["name"] for row in conn.execute("SELECT name FROM reply_audio")}
    assert left == {names[0], names[4]}
