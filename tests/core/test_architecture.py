"""The shape of the code, checked over its import graph (`ast`, nothing imported).

Layers, bottom up: `core/`, `text/`, `audio/`, `storage/`, `voices/` (no engine, no service) ->
`backends/` (engines behind the Protocols) -> `services/` -> `api/` and the app factory. An arrow
may only point down; a module of the lower layers reaching up would tie them to engines and routes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "backend" / "app"
LOWER = ("core", "text", "audio", "storage", "voices")
UPPER = ("backends", "services", "api", "main")
MAX_LINES = 400


def imports(path: Path) -> set[str]:
    """The backend.app modules `path` imports (top level and inside functions alike)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("backend.app.")}


def modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (APP / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules(*LOWER), ids=lambda p: str(p.relative_to(APP)))
def test_lower_layers_never_import_engines_services_or_routes(path: Path) -> None:
    upward = sorted(name for name in imports(path) if name.split(".")[2] in UPPER)
    assert not upward, f"{path.relative_to(APP)} imports {upward}"


def test_services_never_import_routes() -> None:
    upward = {
        str(path.relative_to(APP)): sorted(n for n in imports(path) if n.split(".")[2] in ("api", "main"))
        for path in modules("services", "backends")
    }
    assert not {path: names for path, names in upward.items() if names}


def test_the_graph_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from backend.app.backends.protocols import ChatModel\n")
    assert imports(module) == {"backend.app.backends.protocols"}


def test_no_module_is_over_400_lines() -> None:
    files = [*APP.rglob("*.py"), *(APP / "web").glob("*.js")]
    sizes = {str(p.relative_to(APP)): len(p.read_text().splitlines()) for p in files}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_the_page_script_is_modules() -> None:
    """app.js wires the page's parts up; each part is an ES module with explicit imports."""
    entry = (APP / "web" / "app.js").read_text()
    assert len(re.findall(r'^import .* from "\./[a-z-]+\.js";$', entry, re.M)) >= 5
