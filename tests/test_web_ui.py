"""The web UI. Serving rules (routes, headers, what is never served) with plain Python; the page
itself in a real browser: the app under uvicorn on a loopback port over a real index (chdb)
and WORM store filled with sealed sessions, one imported from an asciinema recording, and
Debian chromium driven by Playwright.

``BLACKBOX_UI_SCREENSHOT=docs/screenshot.png pytest tests/test_web_ui.py -m browser`` also
saves a screenshot of the session page (the README's), relative to the repository root.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from api import TokenVerifier, create_app, generate_ed25519_keypair, mint_token
from api import web as web_module
from api.web import PLAYER_PREFIX, WEB_DIR, mount_web_ui, player_installed
from ingest.asciicast import parse_asciicast, session_events
from ingest.events import SessionBuilder, make_gateway, make_identity, make_target
from replay import SessionReader
from storage.index import Index
from storage.objectstore import LocalWormStore, ObjectStore
from tests.test_api import seal_sessions
from tests.test_reader import T0, BitFlipStore, FlakyStore, terminal_session

REPO = Path(__file__).resolve().parents[1]
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "asciicast"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_ENV = "BLACKBOX_UI_SCREENSHOT"

DEMO_ID = "asciinema-demo"
DEMO_PRINCIPAL = "demo-recorder"
# demo.cast opens vim at 2.9 s and quits it at 7.5 s, back to the fish prompt it ends on.
VIM_BANNER = "VIM - Vi IMproved"
FINAL_PROMPT = "~/c/a/asciinema (develop"


# -- serving, without a browser --------------------------------------------------------------


@pytest.fixture
def ui_client() -> Iterator[TestClient]:
    app = FastAPI()
    mount_web_ui(app)
    with TestClient(app) as client:
        yield client


def test_page_is_served_at_root_and_session_paths_with_a_strict_csp(ui_client: TestClient) -> None:
    root = ui_client.get("/")
    assert root.status_code == 200
    assert root.headers["content-type"].startswith("text/html")
    csp = root.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert root.headers["x-content-type-options"] == "nosniff"
    assert root.headers["cache-control"] == "no-cache"
    for path in ("/sessions/s1", "/sessions/a%20b", "/sessions/with/slash"):
        page = ui_client.get(path)
        assert page.status_code == 200, path
        assert page.text == root.text

    script = ui_client.get("/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == csp
    assert ui_client.get("/static/style.css").headers["content-type"].startswith("text/css")
    etag = script.headers["etag"]
    assert ui_client.get("/static/app.js", headers={"If-None-Match": etag}).status_code == 304

    config = ui_client.get("/ui/config.json").json()
    assert "AI_AGENT" in config["identity_kinds"]
    assert "POSTGRES" in config["target_kinds"]
    assert config["player_prefix"] == PLAYER_PREFIX


@pytest.mark.parametrize(
    "path",
    [
        "/static/package.json",
        "/static/package-lock.json",
        "/static/node_modules/asciinema-player/package.json",
        "/static/../web.py",
        "/static/%2e%2e/web.py",
        "/static/",
        "/static/nope.js",
        f"{PLAYER_PREFIX}/asciinema-player.js",
        f"{PLAYER_PREFIX}/../../package.json",
    ],
)
def test_only_the_ui_files_and_the_player_bundle_are_served(ui_client: TestClient, path: str) -> None:
    response = ui_client.get(path)
    assert response.status_code == 404, path


def test_missing_player_is_a_warning_and_a_404_never_a_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    with caplog.at_level(logging.WARNING, logger="api.web"):
        mount_web_ui(app, player_dir=tmp_path / "not-installed")
    warnings = [r for r in caplog.records if "asciinema-player is not installed" in r.getMessage()]
    assert len(warnings) == 1
    assert "npm ci --prefix api/web" in warnings[0].getMessage()
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(2):
            assert client.get(f"{PLAYER_PREFIX}/asciinema-player.min.js").status_code == 404
        assert client.get("/ui/config.json").json()["player"] is False
        assert client.get("/").status_code == 200
    assert len([r for r in caplog.records if "asciinema-player" in r.getMessage()]) == 1


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        if tag == "style" or "style" in names:
            self.problems.append(f"inline style on <{tag}>")
        self.problems.extend(f"{name} handler on <{tag}>" for name in names if name.startswith("on"))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script body in <script src>")


def test_ui_files_need_no_inline_code_and_no_other_origin() -> None:
    markup = _Markup()
    markup.feed((WEB_DIR / "index.html").read_text())
    assert markup.problems == []
    files = [p for p in WEB_DIR.iterdir() if p.suffix in {".html", ".js", ".css", ".svg"}]
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in files}
    for path in files:
        text = re.sub(r'xmlns="http://www\.w3\.org/2000/svg"', "", path.read_text())
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), (
            f"{path.name} names another origin"
        )
        assert "innerHTML" not in text, f"{path.name} writes HTML from strings"


# -- the page in a browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_ed25519_keypair()


@pytest.fixture(scope="module")
def auditor_token(keys: tuple[bytes, bytes]) -> str:
    return mint_token(keys[0], role="auditor", subject="ana")


def demo_recording_events() -> list[dict[str, Any]]:
    path = VECTORS / "demo.cast"
    if not path.exists():
        pytest.fail(f"the shared asciicast vectors are missing ({path.name} beside the checkout, in shared/)")
    recording = parse_asciicast(path.read_bytes(), source=path.name)
    events = session_events(
        recording,
        identity=make_identity(DEMO_PRINCIPAL, "HUMAN", issuer="https://idp.example"),
        target=make_target("laptop", "SSH", host="laptop.example"),
        session_id=DEMO_ID,
    )
    return [dict(event) for event in events]


def database_session() -> list[dict[str, Any]]:
    builder = SessionBuilder(
        "sql-1",
        make_identity("report-agent", "AI_AGENT", issuer="https://idp.example"),
        make_target("orders-db", "POSTGRES", host="db.internal", database="orders"),
        make_gateway("hoop-1", "hoop"),
    )
    start = T0 + 10 * 60_000_000
    return [
        dict(event)
        for event in [
            builder.start("monthly report", client="psql", at_us=start),
            builder.query(
                "SELECT id, total FROM orders WHERE created_at > $1", ["2024-04-01"], at_us=start + 1000
            ),
            builder.query_result(
                ["id", "total"], [["1", "9.50"], ["2", "12.00"]], duration_us=2300, at_us=start + 5000
            ),
            builder.policy_decision(
                "pii", "MASK", rule="email", reason="email columns are masked", at_us=start + 6000
            ),
            builder.end("closed", at_us=start + 9000),
        ]
    ]


@pytest.fixture
def sessions(tmp_path: Path, index: Index) -> LocalWormStore:
    store = LocalWormStore(tmp_path / "worm", retention=None)
    seal_sessions(
        store,
        index,
        [
            demo_recording_events(),
            *(
                terminal_session(
                    f"ci-{n}",
                    start_us=T0 + n * 60_000_000,
                    output=[b"$ make deploy\r\n", f"deployed build {n}\r\n".encode()],
                )
                for n in range(3)
            ),
            database_session(),
        ],
    )
    return store


def _serve(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn in a thread, on a port the kernel picked (no race for a free one)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture
def make_server(sessions: LocalWormStore, index: Index, keys: tuple[bytes, bytes]) -> Iterator[Any]:
    """Starts the app over the sessions; ``store`` wraps the object store (to make it misbehave)."""
    servers: list[Iterator[str]] = []

    def start(store: Callable[[ObjectStore], ObjectStore] = lambda inner: inner) -> str:
        verifier = TokenVerifier(public_key_pem=keys[1], issuer="blackbox-dev", audience="blackbox")
        served = _serve(create_app(SessionReader(index, store(sessions)), verifier))
        servers.append(served)
        return next(served)

    yield start
    for served in servers:
        next(served, None)  # runs the generator's finally: stop uvicorn


@pytest.fixture
def server(make_server: Any) -> str:
    if not player_installed():
        pytest.fail(
            "asciinema-player is not installed in api/web/node_modules: run scripts/setup.sh "
            "(npm ci --prefix api/web)"
        )
    url: str = make_server()
    return url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium); "
            "Playwright must never download a browser"
        )
    expect.set_options(timeout=15_000)  # a 2-core CI machine loads chdb, the API and the player at once
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """What the page logged: errors, and any Content-Security-Policy violation."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected(self, *allowed: str) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_in(page: Page, token: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def save_screenshot(page: Page, path: Path) -> None:
    """The session page down to the player, paused on vim's start screen (the README's picture)."""
    page.keyboard.press(" ")  # play and pause once, so the big "play" overlay is gone
    page.keyboard.press(" ")
    page.keyboard.press("4")
    expect(page.locator(".ap-term-text")).to_contain_text(VIM_BANNER)
    page.locator(".ap-wrapper").blur()
    box = page.locator("#replay").bounding_box()
    assert box is not None
    bottom = box["y"] + page.evaluate("window.scrollY") + box["height"] + 16
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": bottom})


@pytest.mark.browser
@pytest.mark.slow
def test_auditor_searches_and_replays_a_terminal_session(server: str, page: Page, auditor_token: str) -> None:
    console = Console(page)
    page.goto(server + "/")
    sign_in(page, auditor_token)

    rows = page.locator("table.sessions tbody tr")
    expect(rows).to_have_count(5)
    # Newest first: the database session (T0 + 10 min), the CI sessions, the 2017 recording.
    ids = [rows.nth(i).get_attribute("data-session-id") for i in range(5)]
    assert ids == ["sql-1", "ci-2", "ci-1", "ci-0", DEMO_ID]
    expect(rows.first).to_contain_text("report-agent")
    expect(rows.first).to_contain_text("AI_AGENT")
    expect(rows.first).to_contain_text("sealed")

    page.get_by_label("Identity kind").select_option("HUMAN")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    assert "identity_kind=HUMAN" in page.url
    page.get_by_role("link", name=re.compile(DEMO_PRINCIPAL)).click()

    page.wait_for_url(re.compile(rf"/sessions/{DEMO_ID}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{DEMO_PRINCIPAL} → laptop")
    expect(page.locator("#summary")).to_contain_text("SSH")
    expect(page.locator("#verdict")).to_contain_text("✓ Intact")
    expect(page.locator("#timeline li").first).to_contain_text("Session started")
    expect(page.locator("#timeline")).to_contain_text("Input")
    expect(page.locator("#timeline li").last).to_contain_text("Sealed")

    terminal = page.locator(".ap-term-text")
    expect(terminal).to_be_visible()
    wrapper = page.locator(".ap-wrapper")
    wrapper.focus()
    page.keyboard.press("4")  # 40 %: vim's start screen
    expect(terminal).to_contain_text(VIM_BANNER)
    screenshot = os.environ.get(SCREENSHOT_ENV)
    if screenshot:
        save_screenshot(page, REPO / screenshot)
        wrapper.focus()
    page.keyboard.press("9")
    page.keyboard.press(" ")  # play the last 10 % to the end
    expect(terminal).to_contain_text(FINAL_PROMPT, timeout=20_000)
    expect(terminal).not_to_contain_text(VIM_BANNER)
    assert console.unexpected() == []


@pytest.mark.browser
def test_a_bad_token_is_rejected_and_the_auditor_can_retry(
    server: str, page: Page, auditor_token: str
) -> None:
    console = Console(page)
    page.goto(server + "/")
    sign_in(page, "not-a-jwt")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Token rejected")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    sign_in(page, auditor_token)
    expect(page.locator("table.sessions tbody tr")).to_have_count(5)
    expect(alert).to_be_hidden()
    assert console.unexpected("status of 401") == []


@pytest.mark.browser
def test_unknown_session_says_not_found(server: str, page: Page, auditor_token: str) -> None:
    page.goto(server + "/sessions/no-such-session")
    sign_in(page, auditor_token)
    expect(page.get_by_role("alert")).to_contain_text("Not found")


@pytest.mark.browser
def test_page_works_without_the_player(
    make_server: Any, page: Page, auditor_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_module, "PLAYER_DIR", tmp_path / "not-installed")
    url = make_server()
    page.goto(f"{url}/sessions/{DEMO_ID}")
    sign_in(page, auditor_token)
    expect(page.locator(".player-missing")).to_contain_text("terminal player is not installed")
    expect(page.locator("#verdict")).to_contain_text("✓ Intact")
    expect(page.get_by_role("link", name="Download the .cast file")).to_be_visible()


@pytest.mark.browser
def test_pages_of_results_follow_the_cursor(server: str, page: Page, auditor_token: str) -> None:
    page.goto(server + "/?limit=2")
    sign_in(page, auditor_token)
    rows = page.locator("table.sessions tbody tr")
    older, newer = page.get_by_role("button", name="Older"), page.get_by_role("button", name="Newer")

    def shown() -> list[str | None]:
        expect(page.get_by_role("status")).to_be_empty()
        return [rows.nth(i).get_attribute("data-session-id") for i in range(rows.count())]

    expect(newer).to_be_disabled()
    assert shown() == ["sql-1", "ci-2"]
    older.click()
    expect(page.locator("#page-info")).to_contain_text("Page 2")
    assert shown() == ["ci-1", "ci-0"]
    older.click()
    expect(page.locator("#page-info")).to_contain_text("Page 3")
    assert shown() == [DEMO_ID]
    expect(older).to_be_disabled()
    newer.click()
    expect(page.locator("#page-info")).to_contain_text("Page 2")
    newer.click()
    expect(page.locator("#page-info")).to_contain_text("Page 1")
    assert shown() == ["sql-1", "ci-2"]


@pytest.mark.browser
def test_unreadable_or_corrupt_evidence_is_reported_not_hidden(
    make_server: Any, page: Page, auditor_token: str
) -> None:
    flaky = make_server(FlakyStore)
    page.goto(f"{flaky}/sessions/ci-1")
    sign_in(page, auditor_token)
    expect(page.get_by_role("heading", level=1)).to_have_text("deploy-bot → prod-db")  # the index answers
    expect(page.locator("#verdict")).to_contain_text("Service unavailable")
    expect(page.locator("#timeline")).to_contain_text("Service unavailable")
    expect(page.locator("#timeline")).to_contain_text("retry")

    corrupt = make_server(BitFlipStore)
    page.goto(f"{corrupt}/sessions/ci-1")
    sign_in(page, auditor_token)  # another origin: another sessionStorage
    expect(page.locator("#verdict")).to_contain_text("✗ Verification failed")
    expect(page.locator("#verdict")).to_contain_text("Check archive")
    expect(page.locator("#timeline")).to_contain_text("cannot be read as the index describes them")
