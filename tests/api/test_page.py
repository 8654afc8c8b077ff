"""The browser page's HTTP side: caching, security headers, and access with an API key set.

The page itself is driven in a real browser by tests/browser; these tests need no models (the app
is built without its lifespan, so nothing loads).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from backend.app.api.routes import page
from backend.app.main import create_app
from tests.conftest import make_settings

KEY = "s3cret/key+with=odd chars"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = make_settings(tmp_path_factory.mktemp("page"), api_key=KEY)
    return TestClient(create_app(settings))


def _asset_links(html: str) -> dict[str, str]:
    return dict(re.findall(r'"/static/([a-z0-9.-]+)\?v=([0-9a-f]{16})"', html))


def test_page_is_public_and_revalidated(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    assert client.get("/", headers={"If-None-Match": etag}).status_code == 304
    assert client.head("/").headers["content-length"] == str(len(response.content))


def test_security_headers(client: TestClient) -> None:
    headers = client.get("/").headers
    policy = dict(part.split(" ", 1) for part in headers["content-security-policy"].split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert "microphone=(self)" in headers["permissions-policy"]
    html = client.get("/").text
    assert "<script>" not in html and " style=" not in html and "onclick" not in html  # the CSP allows none


def test_every_linked_asset_is_served_versioned_and_immutable(client: TestClient) -> None:
    links = _asset_links(client.get("/").text)
    assert {"app.js", "style.css", "icon.svg"} <= set(links)
    for name, version in links.items():
        response = client.get(f"/static/{name}?v={version}")
        assert response.status_code == 200, name
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-security-policy"]
        assert client.app.state.site.assets[name].version == version
    script = client.get(f"/static/app.js?v={links['app.js']}")
    assert script.headers["content-type"].startswith("text/javascript")


def test_unversioned_or_stale_asset_is_revalidated(client: TestClient) -> None:
    # The worklet is loaded by URL from the script, without a version: it must not stick in caches.
    for url in ("/static/pcm-worklet.js", "/static/app.js?v=0000000000000000"):
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        again = client.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "name", ["nope.js", "..%2Fmain.py", "..%2F..%2Fmain.py", "index.html", "%2Fetc%2Fpasswd", "app.js%00"]
)
def test_only_the_page_files_are_served(client: TestClient, name: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_page_files_are_read_once_into_memory(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="/static/a.js"></script>')
    (tmp_path / "a.js").write_text("1;")
    (tmp_path / "notes.txt").write_text("not served")
    index, assets = page.load_site(tmp_path)
    assert set(assets) == {"a.js"}
    assert f'"/static/a.js?v={assets["a.js"].version}"' in index.body.decode()
    (tmp_path / "a.js").write_text("2;")  # a change on disk is not seen until the app is rebuilt
    assert assets["a.js"].body == b"1;"


def test_api_key_still_guards_the_api(client: TestClient) -> None:
    assert client.get("/voices").status_code == 401
    assert client.get("/voices", headers={"Authorization": f"Bearer {KEY}"}).status_code == 503  # no models
    assert client.get("/static/app.js").status_code == 200


def _key_protocol(key: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def test_websocket_key_as_subprotocol(client: TestClient) -> None:
    protocols = ["voice-dialogue", _key_protocol(KEY)]
    with client.websocket_connect("/ws/conversation", subprotocols=protocols) as ws:
        assert ws.accepted_subprotocol == "voice-dialogue"  # never the one carrying the key
        assert ws.receive_json()["code"] == "not_ready"  # past auth: the models are not loaded here


@pytest.mark.parametrize(
    "protocols",
    [
        ["voice-dialogue"],
        ["voice-dialogue", _key_protocol("wrong")],
        ["voice-dialogue", "bearer.%%%"],
        [f"bearer.{KEY}"],
    ],
)
def test_websocket_refuses_a_missing_or_wrong_key(client: TestClient, protocols: list[str]) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/conversation", subprotocols=protocols),
    ):
        pass
    assert refused.value.code == 1008


def test_the_script_modules_import_each_other_versioned(client: TestClient) -> None:
    """Every module the page's script imports is fetched by a versioned URL, so a browser caches
    the whole graph for a year and still sees a new release at once."""
    seen, queue = set(), [f"/static/app.js?v={_asset_links(client.get('/').text)['app.js']}"]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable", url
        for name in re.findall(r'from "\./([a-z0-9.-]+\.js)(\?v=[0-9a-f]{16})?"', response.text):
            assert name[1], f"{url} imports ./{name[0]} without a version"
            queue.append(f"/static/{name[0]}{name[1]}")
    assert len(seen) >= 10  # the page's parts, each a module


def test_a_change_to_any_module_gives_every_module_a_new_url(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script type="module" src="/static/a.js"></script>')
    (tmp_path / "a.js").write_text('import { b } from "./b.js";\nb();\n')
    (tmp_path / "b.js").write_text("export function b() {}\n")
    before = page.load_site(tmp_path)
    (tmp_path / "b.js").write_text("export function b() { return 1; }\n")
    after = page.load_site(tmp_path)
    assert before.assets["a.js"].version != after.assets["a.js"].version
    assert f'"./b.js?v={after.assets["b.js"].version}"'.encode() in after.assets["a.js"].body


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to link the modules")
def test_every_import_of_the_page_modules_names_a_real_export(tmp_path: Path) -> None:
    """Node links the page's module graph (as a browser does) without running the page: an import
    of a name a module does not export fails here."""
    web = Path(page.WEB_DIR)
    for script in web.glob("*.js"):
        shutil.copy(script, tmp_path / script.name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    modules = sorted(p.name for p in web.glob("*.js") if p.name not in ("app.js", "pcm-worklet.js"))
    program = "".join(f'await import("./{name}");\n' for name in modules)  # app.js would start the page
    (tmp_path / "link.js").write_text(program)
    result = subprocess.run(["node", "link.js"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _server_error_codes() -> set[str]:
    """Every `code` the server's errors can carry to the page: its domain exceptions, the
    framework's by status, and the realtime WebSocket's own."""
    import backend.app.main  # noqa: F401 - imports every module that defines an error
    from backend.app.core.errors import AppError, _status_code_name

    codes: set[str] = set()
    todo: list[type[AppError]] = [AppError]
    while todo:
        error = todo.pop()
        codes.add(error.code)
        todo += error.__subclasses__()
    codes |= {
        _status_code_name(status) for status in (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 504, 507)
    }
    return codes | {
        "protocol_error",
        "invalid_sample_rate",
        "frame_too_large",
        "idle_timeout",
        "session_limit",
    }


_EXPLAIN = """
const [language, errors] = [process.argv[2], JSON.parse(process.argv[3])];
globalThis.localStorage = { getItem: () => language, setItem() {} };  // the language the page keeps
const { detailOf, explain } = await import("./notices.js");
const { ApiError } = await import("./server.js");
const shown = errors.map(([status, code, message]) => {
  const error = new ApiError(status, code, message, 7);
  return { code, text: explain(error), detail: detailOf(error) };
});
console.log(JSON.stringify(shown));
"""


def _explained(tmp_path: Path, language: str, errors: list[tuple[int, str, str]]) -> list[dict[str, str]]:
    """What the page's `explain` makes of each server error, the page being in `language`."""
    import json

    for script in Path(page.WEB_DIR).glob("*.js"):
        shutil.copy(script, tmp_path / script.name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "explain.js").write_text(_EXPLAIN)
    result = subprocess.run(
        ["node", "explain.js", language, json.dumps(errors)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shown: list[dict[str, str]] = json.loads(result.stdout)
    return shown


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's modules")
@pytest.mark.parametrize("language", ["zh-TW", "zh-CN"])
def test_server_errors_are_shown_in_the_pages_chinese(tmp_path: Path, language: str) -> None:
    """The server's messages are English; a Chinese page shows every error code in Chinese (its own
    words for the code, or, for a code it does not know, a Chinese sentence naming it), with the
    server's message kept as the detail."""
    codes = sorted(_server_error_codes())
    errors = [
        (503 if code == "storage_unavailable" else 400, code, f"the server says {code}") for code in codes
    ]
    for shown in _explained(tmp_path, language, errors):
        code, text = shown["code"], shown["text"]
        assert re.search(r"[\u4e00-\u9fff]", text), shown
        assert not re.search(r"[A-Za-z]", text.replace(code, "").replace("API", "")), shown
        if code not in ("not_ready", "overloaded", "unauthorized"):  # the page's own words already
            assert shown["detail"] == f"the server says {code}", shown
    (down,) = _explained(tmp_path, language, [(503, "storage_unavailable", "the database is unreachable")])
    assert "7" in down["text"]  # when to try again (Retry-After), in Chinese too
    traditional = language == "zh-TW"
    assert ("資料庫" if traditional else "数据库") in down["text"], down


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's modules")
def test_server_errors_on_the_english_page_are_the_servers_own_words(tmp_path: Path) -> None:
    (audio, busy) = _explained(
        tmp_path,
        "en",
        [(422, "invalid_audio", "the upload has no decodable audio"), (503, "overloaded", "full")],
    )
    assert audio == {"code": "invalid_audio", "text": "the upload has no decodable audio", "detail": ""}
    assert busy["text"] == "The server is busy with other requests. Try again in 7 s."
