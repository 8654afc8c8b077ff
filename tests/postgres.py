"""A real PostgreSQL server for the tests: `initdb` into a temporary directory, `postgres` on a free
localhost port, stopped at the end of the session. Debian's `postgresql` package provides it
(`make postgres` installs it, as `make test` does); without it the tests that need it are skipped,
with the reason in pytest's summary. Never a mock.

As root (CI), the server runs as the package's `postgres` user, which PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    port: int
    data: Path
    bin: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:secret-pw@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a generated name, not input
        return self.url(name)

    def remove(self) -> None:
        """Stop it and delete its data."""
        self.stop()
        shutil.rmtree(self.data.parent, ignore_errors=True)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def crash(self) -> None:
        """End it at once, as a crash or a kill would: PostgreSQL's immediate shutdown (SIGQUIT to
        the postmaster), its sessions cut without a goodbye; `start` then recovers from the WAL."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGQUIT)
        self.process.wait(30)

    def start(self) -> None:
        """Start it again on the same port and data (after `stop`, `crash`, or a kill)."""
        self.process = _launch(self.bin, self.data, self.port)
        _wait_ready(self)


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _launch(binaries: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
        "-k", str(data), "-c", "fsync=on", "-c", "max_connections=200",
    ]  # fmt: skip
    log = (data / "server.log").open("ab")
    return subprocess.Popen(_as_postgres(command), stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(server: PostgresServer, timeout_s: float = 60) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited: {(server.data / 'server.log').read_text()[-2000:]}")
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise RuntimeError("postgres did not start")


def start_postgres() -> PostgresServer:
    """A new server in a temporary directory (RuntimeError when PostgreSQL is not installed)."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (make postgres installs Debian's postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="voice-pg-"))
    data = root / "data"
    data.mkdir()
    password = root / "pw"
    password.write_text("secret-pw\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(password, "postgres")
        os.chmod(root, 0o755)
    subprocess.run(
        _as_postgres([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(password),
                      "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True,
    )  # fmt: skip
    server = PostgresServer(free_port(), data, binaries, None)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.remove()
