"""The web page's login (``ui.auth``) on a page open to the network (``--host 0.0.0.0``, reached on
127.0.0.1), in headless Chromium driven by playwright; another site's page in the same browser,
which must not talk to the agent even with the page's token in hand; and DNS rebinding (another
name that resolves to 127.0.0.1), which a server on loopback refuses."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest
from test_browser_session import FLAGS, Launcher, free_port, need_browser
from test_web_app import web  # noqa: F401  (a fixture: the server in this process on a real bus)

EVIL_PAGE = """<!doctype html><title>another site</title><script>
// what another site's page can try from the user's browser, given the page's token somehow
window.talk = (port, token) => new Promise((resolve) => {
  const ws = new WebSocket("ws://127.0.0.1:" + port + "/rtchat/ws?token=" + encodeURIComponent(token) + "&client=evil");
  ws.onopen = () => ws.send(JSON.stringify({type: "text", text: "from another site"}));
  ws.onclose = (e) => resolve({code: e.code, reason: e.reason});
});
window.login = (port) => fetch("http://127.0.0.1:" + port + "/login", {method: "POST", mode: "no-cors",
  body: new URLSearchParams({username: "ann", password: "secret"})}).then(() => "sent", (e) => String(e));
</script>"""


class EvilSite:
    """Another site: a page served on another port of 127.0.0.1 (another origin)."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = EVIL_PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def user_words(page) -> str:
    return page.evaluate("() => (window.rtchat.state ? window.rtchat.state.transcript : []).filter(t => t.who === 'user')"
                         ".map(t => t.parts.filter(p => 'w' in p).map(p => p.w).join(' ')).join(' ')")


@pytest.mark.slow
@pytest.mark.browser
def test_browser_logs_in_on_an_open_host_and_another_sites_page_cannot_talk(tmp_path):
    chromium = need_browser()
    from playwright.sync_api import sync_playwright

    port = free_port()
    launcher = Launcher(tmp_path, port, "--host", "0.0.0.0", "ui.auth=ann:secret", "launcher.nodes=[logger]")
    evil = EvilSite()
    try:
        launcher.wait_for("in a browser to talk to the agent", 60)
        assert any("ui.host=0.0.0.0: the web page (and the agent) can be reached from the network" in line
                   for line in launcher.lines), launcher.lines
        url = f"http://127.0.0.1:{port}/"  # open to the network, reached on loopback only
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=FLAGS)
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            # the login first: a wrong password is refused, and no page script runs without a login
            page.locator("input[type=password]").wait_for(timeout=30_000)
            page.locator("input").first.fill("ann")
            page.locator("input[type=password]").fill("guess")
            page.get_by_role("button", name="Login").click()
            page.get_by_text("Incorrect Credentials").wait_for(timeout=10_000)
            assert page.evaluate("typeof window.rtchat") == "undefined"
            page.locator("input").first.fill("ann")  # the login form empties itself after a refusal
            page.locator("input[type=password]").fill("secret")
            page.get_by_role("button", name="Login").click()
            page.wait_for_function("() => window.rtchat && window.rtchat.connected", timeout=30_000)
            page.fill("#rtchat-text", "hello through the login")
            page.press("#rtchat-text", "Enter")
            page.wait_for_function("() => window.rtchat.state && window.rtchat.state.transcript.some(t => t.who === 'user')",
                                   timeout=15_000)
            assert "hello through the login" in user_words(page)
            token = page.evaluate("document.querySelector('#rtchat-token textarea, #rtchat-token input').value")
            assert token

            # another site's page in the same browser: even with the token, its WebSocket is closed, saying why
            other = browser.new_page()
            other.goto(evil.url, wait_until="domcontentloaded")
            refused = other.evaluate("([port, token]) => window.talk(port, token)", [port, token])
            assert refused["code"] == 4403, refused
            assert refused["reason"].startswith(f"refused: Origin '{evil.url[:-1]}' is another site"), refused
            assert other.evaluate("([port]) => window.talk(port, 'guess')", [port]) == {
                "code": 4401, "reason": "not logged in: reload the page"}
            assert other.evaluate("([port]) => window.login(port)", [port]) == "sent"  # a login forged from there
            other.close()

            # the page goes on; nothing of the other site's reached the bus (it would have come back before this)
            page.fill("#rtchat-text", "after the attack")
            page.press("#rtchat-text", "Enter")
            page.wait_for_function("() => window.rtchat.state.transcript.some(t => t.parts.some("
                                   "p => 'w' in p && p.w.includes('after the attack')))", timeout=15_000)
            assert "from another site" not in user_words(page)
            assert page.evaluate("window.rtchat.connected && !window.rtchat.locked")
            status = httpx.get(f"{url}rtchat/status", params={"token": token}, timeout=10).json()["counters"]
            assert (status["refused_origin"], status["refused_token"], status["refused_http"]) == (1, 1, 1), status
            browser.close()
        assert launcher.proc.poll() is None, "\n".join(launcher.lines[-30:])
    finally:
        evil.close()
        rc = launcher.stop()
    assert rc == 0, "\n".join(launcher.lines[-30:])
    assert not [line for line in launcher.lines if "Traceback" in line], launcher.lines


@pytest.mark.slow
@pytest.mark.browser
def test_browser_on_a_rebound_name_is_refused_while_the_page_works(web, tmp_path):  # noqa: F811
    chromium = need_browser()
    from playwright.sync_api import sync_playwright

    port = web.cfg.ui.port
    with sync_playwright() as p:
        # evil.example resolves to 127.0.0.1 in this browser, as DNS rebinding would make it (no DNS is asked)
        browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                    args=[*FLAGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"])
        page = browser.new_page()
        response = page.goto(f"http://evil.example:{port}/", wait_until="domcontentloaded")
        assert response.status == 403 and "not a loopback name" in page.inner_text("body")
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.wait_for_function("() => window.rtchat && window.rtchat.connected", timeout=30_000)
        browser.close()
    assert web.counters["refused_http"] >= 1  # the page, and maybe the browser's own favicon request (playwright sees no such)
    assert web.counters["connects"] == 1
    assert web.stats()["bad_frames"] == 0
