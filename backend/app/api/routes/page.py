"""GET / (the browser page) and GET /static/{name} (its scripts and styles).

The page's files ship in `backend/app/web/` and are read once, by the app factory (`load_site`, kept
in `app.state.site`); a request only looks a name up in that table, so no client value ever becomes
a path. No build step: the files are plain HTML, CSS and JavaScript modules (`app.js` imports the
page's parts: `state.js`, `server.js`, `playback.js`, `hands-free.js`, ...).

Caching: the page itself is `no-cache` (revalidated with its ETag on every load), and it links each
asset as `/static/{name}?v={hash}`; the script modules link each other the same way (`load_site`).
A request carrying the current hash may be cached for a year (`immutable`); any other request for
an asset is revalidated. A new release therefore reaches every browser on its next page load, and
an unchanged asset is never fetched twice.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from fastapi import APIRouter, Request, Response

from backend.app.core.errors import NotFoundError

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
PAGE = "index.html"

# The page loads its own scripts, styles and worklet and talks to its own origin only (fetch and
# the realtime WebSocket: CSP level 3 lets 'self' match ws:/wss: on the same host). Reply audio is
# played from blob: URLs and Web Audio buffers; nothing is inline, nothing is framed.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"

_ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*\.(?:js|css|svg)")


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str  # the first 16 hex digits of the SHA-256 of `body`

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _asset(body: bytes, name: str, version: str | None = None) -> Asset:
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    return Asset(body, media_type, version or hashlib.sha256(body).hexdigest()[:16])


class Site(NamedTuple):
    page: Asset
    assets: dict[str, Asset]


# `import ... from "./x.js"`, `import "./x.js"` and `import("./x.js")`: a module's own imports.
_IMPORT = re.compile(rb"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])\./([a-z0-9][a-z0-9.-]*\.js)\2""")


def load_site(web_dir: Path = WEB_DIR) -> Site:
    """Read the page and its assets; the page's `/static/{name}` links get `?v={hash}`.

    The scripts are ES modules that import each other (they may do so in a cycle), so they share
    one version, the hash of all of them: each module's imports of its siblings are rewritten to
    `./x.js?v={version}`, and a change to any module gives every module a new URL."""
    raw = {
        path.name: path.read_bytes()
        for path in sorted(web_dir.iterdir())
        if path.is_file() and _ASSET_NAME.fullmatch(path.name)
    }
    scripts = hashlib.sha256()
    for name, body in raw.items():
        if name.endswith(".js"):
            scripts.update(name.encode() + b"\0" + body + b"\0")
    version = scripts.hexdigest()[:16]

    def versioned(match: re.Match[bytes]) -> bytes:
        prefix, quote, name = match.groups()
        if name.decode() not in raw:
            return match.group(0)
        return prefix + quote + b"./" + name + b"?v=" + version.encode() + quote

    assets = {
        name: _asset(_IMPORT.sub(versioned, body), name, version)
        if name.endswith(".js")
        else _asset(body, name)
        for name, body in raw.items()
    }
    page = (web_dir / PAGE).read_text(encoding="utf-8")
    for name, asset in assets.items():
        page = page.replace(f'"/static/{name}"', f'"/static/{name}?v={asset.version}"')
    return Site(_asset(page.encode(), PAGE), assets)


def _respond(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {"Cache-Control": cache_control, "ETag": asset.etag, **SECURITY_HEADERS}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, headers=headers, media_type=asset.media_type)


@router.api_route("/", methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    """The voice chat page."""
    site: Site = request.app.state.site
    return _respond(request, site.page, REVALIDATE)


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static_asset(name: str, request: Request, v: str | None = None) -> Response:
    """One of the page's files, by name only."""
    site: Site = request.app.state.site
    asset = site.assets.get(name)
    if asset is None:
        raise NotFoundError(f"no such file: {name[:100]}")
    return _respond(request, asset, IMMUTABLE if v == asset.version else REVALIDATE)
