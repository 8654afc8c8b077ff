"""The live server of the socket fuzz stages: started once for the modules that use it, stopped when
the last test of tests/fuzz is done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.live import LiveServer, live_server
from tests.server import server_dir


@pytest.fixture(scope="package")
def sockets_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(server_dir(tmp_path_factory, "fuzz-sockets")) as server:
        yield server
