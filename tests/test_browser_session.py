"""The web page in a real browser: the launcher with the embedded CPU models and ``--ui gradio``
as a subprocess, headless Debian Chromium (driven by playwright) with a fake microphone that plays
a user recording made by ``rtchat simulate-user``. Speech has silence around it: Chromium loops
the fake-capture file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import missing_install

CHROMIUM = "/usr/bin/chromium"
SCRIPT = "[1.0] hello there how are you doing today\n"
FLAGS = ["--autoplay-policy=no-user-gesture-required", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def need_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_install("the browser test needs the playwright package (pip install playwright; no browser download needed)")
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        missing_install(f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    return Path(CHROMIUM) if Path(CHROMIUM).is_file() else Path(shutil.which("chromium"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launcher:
    """``python -m rtchat.launcher --ui gradio`` in the background; its stderr collected."""

    def __init__(self, tmp: Path, port: int, *overrides: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtchat.launcher", "--ui", "gradio", f"ui.port={port}", f"run.runs_dir={tmp / 'runs'}",
             *overrides],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "the launcher exited:\n" + "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.1)

    def child(self, module: str) -> int:
        """The pid of the launcher's child process running ``module``."""
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in map(int, kids):
            if module in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        raise AssertionError(f"no child process runs {module}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        return self.proc.returncode


@pytest.fixture
def user_wav(tmp_path) -> Path:
    (tmp_path / "user.txt").write_text(SCRIPT)
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "simulate-user", "user.txt", "--out", "user.wav", "--tail", "7"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tmp_path / "user.wav"


def transcript(page, who: str) -> str:
    return page.evaluate(
        "(who) => (window.rtchat.state ? window.rtchat.state.transcript : []).filter(t => t.who === who)"
        ".map(t => t.parts.filter(p => 'w' in p).map(p => p.w).join(' ')).join(' ')", who)


@pytest.mark.browser
@pytest.mark.model
@pytest.mark.slow
def test_browser_talks_to_the_agent_hears_it_and_resets(tmp_path, user_wav):
    chromium = need_browser()
    from playwright.sync_api import sync_playwright

    port = free_port()
    # Chromium shares the 2-core test machine: a transcription can then block the ASR's heartbeat
    # for more than the default 3 s, and a restart is not what this test is about
    launcher = Launcher(tmp_path, port, "launcher.missed_heartbeats=15")
    try:
        launcher.wait_for("in a browser to talk to the agent", 90)
        url = f"http://127.0.0.1:{port}/"
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=str(chromium), headless=True,
                args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-audio-capture={user_wav}", *FLAGS])
            page = ctx.new_page()
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.rtchat && window.rtchat.connected", timeout=30_000)
            page.click("#rtchat-mic")
            page.wait_for_function("() => window.rtchat.recording && window.rtchat.micFrames > 10", timeout=10_000)
            assert page.evaluate("window.rtchat.micRate") in (16000, 44100, 48000)

            # (a) the user's words, (b) the agent's words, (c) the agent's audio played by the page
            # the first words shown may be a short first guess (a partial), revised as more audio
            # is heard: wait for the user's words to hold what the recording says
            deadline = time.monotonic() + 40
            while not any(w in transcript(page, "user").lower() for w in ("hello", "how", "today")):
                assert time.monotonic() < deadline, transcript(page, "user")
                page.wait_for_timeout(200)
            page.wait_for_function("() => window.rtchat.state.transcript.some("
                                   "t => t.who === 'agent' && t.parts.some(p => 'w' in p))", timeout=40_000)
            assert transcript(page, "agent").strip()
            page.wait_for_function("() => window.rtchat.playedSamples > 0", timeout=30_000)
            assert page.evaluate("window.rtchat.pieces") > 0
            assert page.inner_text("#rtchat-transcript").count("S1:") >= 1
            # the timeline shows both (the agent's span once audio.played reports its whole chunk), the nodes are healthy
            page.wait_for_function("() => ['user', 'agent'].every(w => window.rtchat.state.timeline.spans.some("
                                   "s => s.who === w))", timeout=20_000)
            st = page.evaluate("window.rtchat.state")
            assert {"agent", "asr", "tts", "audio"} <= set(st["nodes"]), st["nodes"]
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            # a second tab is told that another tab holds the conversation
            other = ctx.new_page()
            other.goto(url, wait_until="domcontentloaded")
            other.wait_for_function("() => window.rtchat && window.rtchat.locked", timeout=30_000)
            assert "Another tab is talking to this agent" in other.inner_text("#rtchat-status")
            other.close()

            # (d) reset clears the conversation (the microphone off first: the fake one loops)
            page.click("#rtchat-mic")
            page.click("#rtchat-reset")
            page.wait_for_function("() => window.rtchat.state.resets >= 1 && window.rtchat.state.transcript.length === 0",
                                   timeout=15_000)
            assert page.inner_text("#rtchat-transcript").strip() == ""

            # typed words still work, and go in as the user's
            page.fill("#rtchat-text", "are you there")
            page.press("#rtchat-text", "Enter")
            page.wait_for_function("() => window.rtchat.state.transcript.some(t => t.who === 'user' && "
                                   "t.parts.some(p => 'w' in p && p.w.includes('are you there')))", timeout=15_000)
            page.screenshot(path=str(tmp_path / "page-after-reset.png"), full_page=True)

            # 50 rapid resets: refused beyond 4 a second, the page and every node stay up
            for _ in range(50):
                page.click("#rtchat-reset", delay=0)
            page.wait_for_function("() => window.rtchat.status.includes('reset ignored')", timeout=10_000)
            page.wait_for_function("() => window.rtchat.state.transcript.length === 0 && window.rtchat.connected",
                                   timeout=10_000)
            page.fill("#rtchat-text", "still there")
            page.press("#rtchat-text", "Enter")
            page.wait_for_function("() => window.rtchat.state.transcript.some(t => t.who === 'user')", timeout=15_000)
            ctx.close()
        assert launcher.proc.poll() is None, "\n".join(launcher.lines[-30:])
    finally:
        rc = launcher.stop()
    assert rc == 0, "\n".join(launcher.lines[-30:])
    assert not [line for line in launcher.lines if "restarting" in line or "exited with" in line], launcher.lines


@pytest.mark.browser
@pytest.mark.slow
def test_browser_without_a_microphone_says_so_typing_works_and_a_restart_shows(tmp_path):
    chromium = need_browser()
    from playwright.sync_api import sync_playwright

    port = free_port()
    launcher = Launcher(tmp_path, port, "launcher.nodes=[logger]")  # no models: the page, typing, the lock
    try:
        launcher.wait_for("in a browser to talk to the agent", 60)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--deny-permission-prompts", *FLAGS])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_function("() => window.rtchat && window.rtchat.connected", timeout=30_000)
            page.click("#rtchat-mic")
            page.wait_for_function("() => window.rtchat.micError !== ''", timeout=10_000)
            assert "You can still type" in page.inner_text("#rtchat-status")
            assert not page.evaluate("window.rtchat.recording")
            page.fill("#rtchat-text", "hello typed")
            page.click("#rtchat-send")
            page.wait_for_function("() => window.rtchat.state && window.rtchat.state.transcript.some(t => t.who === 'user')",
                                   timeout=15_000)
            # a 10,000-character summary through the page's settings: applied at the next reset, reported clipped
            page.get_by_text("Conversation — applies at the next reset").click()
            page.get_by_label("Dialogue summary prompt").fill(("S1 and S2 talk about the sea. " * 400)[:10_000])
            page.click("#rtchat-apply")
            page.wait_for_function("() => document.querySelector('#rtchat-apply-result').innerText.includes('summary cut')",
                                   timeout=15_000)
            result = page.inner_text("#rtchat-apply-result")
            assert "applied at the next reset: summary" in result and "to 2000 characters" in result, result
            page.wait_for_function("() => window.rtchat.state.notes.some(n => n.includes('summary cut'))", timeout=5_000)
            # a node that dies is restarted, and the page shows it
            page.wait_for_function("() => window.rtchat.state.nodes.logger && window.rtchat.state.nodes.logger.status === 'ok'",
                                   timeout=10_000)
            os.kill(launcher.child("rtchat.nodes.logger"), signal.SIGKILL)
            page.wait_for_function("() => window.rtchat.state.nodes.logger.restarts >= 1", timeout=20_000)
            page.wait_for_function("() => document.querySelector('#rtchat-nodes').innerText.includes('restarted 1')",
                                   timeout=5_000)

            # closing the tab frees the conversation for the next one
            page.close()
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_function("() => window.rtchat && window.rtchat.connected", timeout=30_000)
            assert not page.evaluate("window.rtchat.locked")
            browser.close()
    finally:
        rc = launcher.stop()
    assert rc == 0, "\n".join(launcher.lines[-30:])
