"""What storing a turn costs on each backend: SQLite under DATA_DIR (the default) and PostgreSQL
(DATABASE_URL, a real server started here on localhost, as the tests start one).

For each backend, 1,000 turns (a question and its answer, one transaction each, durably committed)
on 20 conversations, timed one by one: the median and 95th percentile per stored turn, with and
without the conversation lock that serialises a conversation's turns across replicas (on SQLite a
no-op). Then reading a conversation's context (its last 40 turns), as every reply does.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import machine
from bench.common import pyplot, table

TURNS = 1000


def _timed(fn: Callable[[int], None], count: int) -> list[float]:
    times = []
    for i in range(count):
        began = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - began) * 1000)
    return times


def _measure_store(store: Any, count: int) -> dict[str, float]:
    from backend.app.storage.rows import Turn

    def add(i: int) -> None:
        store.add_turns(
            f"bench-{i % 20}",
            [
                Turn("user", f"Question {i}: what is the weather like?"),
                Turn("assistant", "Sunny, 21 degrees."),
            ],
        )

    def locked(i: int) -> None:
        held = store.try_lock(f"bench-{i % 20}")
        try:
            add(i)
        finally:
            held.release()

    def context(i: int) -> None:
        store.turns(f"bench-{i % 20}", limit=40)

    plain, with_lock, read = _timed(add, count), _timed(locked, count), _timed(context, count // 4)
    q = statistics.quantiles
    return {
        "median": statistics.median(plain),
        "p95": q(plain, n=20)[-1],
        "locked_median": statistics.median(with_lock),
        "read_median": statistics.median(read),
    }


def measure(count: int = TURNS) -> list[dict[str, Any]]:
    from backend.app.storage.conversations import ConversationStore

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ConversationStore(Path(tmp) / "conversations.db")
        rows.append({"backend": "SQLite (WAL, synchronous=FULL)", **_measure_store(store, count)})
        store.close()
    try:
        from tests.postgres import start_postgres

        server = start_postgres()
    except (RuntimeError, OSError) as e:
        print(f"storage: PostgreSQL skipped ({e})", flush=True)
        return rows
    try:
        from backend.app.storage.postgres import PostgresStore

        pg = PostgresStore(server.new_database())
        version = pg.pool.getconn()
        try:
            name = "PostgreSQL " + str(version.info.server_version // 10000) + " (localhost TCP)"
        finally:
            pg.pool.putconn(version)
        rows.append({"backend": name, **_measure_store(pg, count)})
        pg.close()
    finally:
        server.remove()
    for row in rows:
        print(f"storage {row['backend']}: {row}", flush=True)
    return rows


def section(rows: list[dict[str, Any]], out: Path, count: int = TURNS) -> list[str]:
    lines = [
        "## Storage: one turn on each backend",
        "",
        f"{count} turns (a question and its answer, one committed transaction each) on 20 conversations, "
        "timed one by one on this machine; PostgreSQL is a local server started for the run (fsync on). "
        "With the lock: the conversation lock that serialises a conversation's turns across replicas is "
        "taken and released around each turn (on SQLite a no-op: one process owns the file). Context "
        "read: a conversation's last 40 turns, as each reply reads them.",
        "",
    ]
    headers = [
        "backend",
        "per turn, median ms",
        "p95 ms",
        "with the lock, median ms",
        "context read, median ms",
    ]
    cells = [
        [
            r["backend"],
            f"{r['median']:.2f}",
            f"{r['p95']:.2f}",
            f"{r['locked_median']:.2f}",
            f"{r['read_median']:.2f}",
        ]
        for r in rows
    ]
    lines += table(headers, cells)
    lines += [
        "",
        "Beside a turn's models (hundreds of milliseconds to seconds), either backend's storage is noise.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![storage](storage.png)",
        "",
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [r["backend"].split(" (")[0] for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["median"] for r in rows], 0.4, label="turn")
    ax.bar([x + 0.2 for x in xs], [r["locked_median"] for r in rows], 0.4, label="turn + conversation lock")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("ms per stored turn (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "storage.png", dpi=110)
    plt.close(fig)
    return lines
