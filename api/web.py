"""The auditors' web UI: the static files in api/web served at "/", under a strict CSP.

The page is plain HTML, ES modules and CSS (no build step) that call /api/v1 with the bearer
token the auditor pastes. The terminal player (npm ``asciinema-player``) is installed into
api/web/node_modules by npm at set-up time and never committed; without it the UI still works
and says where the player would be. Only the files named here are served: nothing else of
api/web (node_modules, package.json) is reachable.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from replay import identity_kinds, target_kinds

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
PLAYER_DIR = WEB_DIR / "node_modules" / "asciinema-player" / "dist" / "bundle"
PLAYER_FILES = frozenset({"asciinema-player.min.js", "asciinema-player.css"})
PLAYER_PREFIX = "/static/vendor/asciinema-player"
INSTALL_PLAYER = "npm ci --prefix api/web (scripts/setup.sh runs it)"
UI_SUFFIXES = frozenset({".html", ".js", ".css", ".svg"})

# No inline script or style anywhere, so 'self' is enough. 'wasm-unsafe-eval' lets the player
# compile its terminal emulator (WebAssembly shipped inside its own script); it does not allow
# eval of JavaScript.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# The UI's own files are not fingerprinted: revalidate every time (cheap, ETag). The player's
# version is pinned by package-lock.json and changes only with a deploy.
UI_CACHE = "no-cache"
PLAYER_CACHE = "public, max-age=86400"


def _headers(cache_control: str) -> dict[str, str]:
    return {
        "Cache-Control": cache_control,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


class _NamedFiles(StaticFiles):
    """Static files limited to a fixed set of names in one directory (no subdirectories)."""

    def __init__(self, directory: Path, names: frozenset[str], cache_control: str) -> None:
        super().__init__(directory=directory, check_dir=False)
        self._names = names
        self._extra_headers = _headers(cache_control)

    async def check_config(self) -> None:
        """The directory was checked by mount_web_ui; a missing one answers 404, never 500."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self._names:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers.update(self._extra_headers)
        return response


def _ui_files() -> frozenset[str]:
    return frozenset(
        entry.name for entry in WEB_DIR.iterdir() if entry.is_file() and entry.suffix in UI_SUFFIXES
    )


def player_installed(player_dir: Path | None = None) -> bool:
    return all(((player_dir or PLAYER_DIR) / name).is_file() for name in PLAYER_FILES)


def mount_web_ui(app: FastAPI, *, player_dir: Path | None = None) -> None:
    """Serve the UI at "/" and "/sessions/{id}" (routing happens in the page) and its files at /static.

    ``player_dir`` holds the player's bundle (default: where ``npm ci --prefix api/web`` puts it).
    """
    player_dir = player_dir or PLAYER_DIR
    index_html = WEB_DIR / "index.html"
    if not index_html.is_file():
        logger.error("web UI files are missing from %s; the UI is not served", WEB_DIR)
        return
    has_player = player_installed(player_dir)
    if not has_player:
        logger.warning(
            "asciinema-player is not installed in %s: the UI cannot replay terminals; run %s",
            player_dir,
            INSTALL_PLAYER,
        )
    page_headers = _headers(UI_CACHE)
    config = {
        "player": has_player,
        "player_prefix": PLAYER_PREFIX,
        "install_player": INSTALL_PLAYER,
        "identity_kinds": list(identity_kinds()),
        "target_kinds": list(target_kinds()),
    }

    @app.get("/", include_in_schema=False)
    @app.get("/sessions/{session_id:path}", include_in_schema=False)
    def web_ui_page() -> FileResponse:
        return FileResponse(index_html, media_type="text/html", headers=page_headers)

    @app.get("/ui/config.json", include_in_schema=False)
    def web_ui_config() -> JSONResponse:
        return JSONResponse(config, headers=page_headers)

    # The player's mount goes first: the /static mount would otherwise take its paths.
    app.mount(PLAYER_PREFIX, _NamedFiles(player_dir, PLAYER_FILES, PLAYER_CACHE), name="player")
    app.mount("/static", _NamedFiles(WEB_DIR, _ui_files(), UI_CACHE), name="static")
