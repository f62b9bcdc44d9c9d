"""The web page's server: a FastAPI app with the page's WebSocket (``/rtchat/ws``), a status
route (``/rtchat/status``) and static files (``/rtchat/static``), the Gradio Blocks page (layout
and controls) mounted at ``/``, served by uvicorn on a thread; and ``WebFrontend``, the launcher's
handle on it.

One conversation per server: the first tab holds it; other tabs are read-only (they see the live
view, their input is refused) and may take over (the old tab is then told it lost the
conversation and becomes read-only). Every WebSocket must show the per-launch token, which the
page gets through a Gradio event (behind Gradio's login when ``ui.auth`` is set), so a page that
did not log in cannot talk to the agent; and come from the page's own origin (``net.py``).

What a hostile or broken page can cost is bounded: a message is at most ``MAX_MESSAGE_BYTES``
(refused by its declared length, before it is read), ``MAX_TABS`` connections, ``QUEUE_MAX_BYTES``
of output waiting for each, one unsent state per tab, and the bridge's ``MAX_BACKLOG`` frames
waiting for the bus. Every refused frame, connection and request is counted (``counters``,
readable on ``/rtchat/status`` and in the ``web`` node's heartbeat).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path

from fastapi import Request, WebSocket

from rtchat.bus.clock import Clock
from rtchat.bus.events import ConfigChange, Reset, UserText
from rtchat.configs.schema import Config
from rtchat.datasets.lines import clip_summary
from rtchat.ui.web.bridge import MAX_BACKLOG, Bridge
from rtchat.ui.web.net import SameOrigin, foreign, listen_socket
from rtchat.ui.web.protocol import (
    AT_ONCE,
    AT_RESET,
    CONTROL_KEYS,
    MAX_MESSAGE_BYTES,
    MAX_MIC_MS,
    MAX_NOTICE_CHARS,
    MAX_TEXT_CHARS,
    MIC_HEADER,
    BadMessage,
    check_changes,
    parse_mic,
    parse_text,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
RESET_MIN_GAP_NS = 250_000_000  # faster resets are refused (and the page told)
MAX_TABS = 32  # open WebSockets (the holder and read-only tabs); more are refused
QUEUE_MAX_BYTES = 2 * 1024 * 1024  # output waiting for a slow tab (47 s of 22 kHz audio); then audio and notices are dropped
# What hostile tabs can make the server hold at most, by construction: per tab its output queue,
# one message being read, the socket's read buffer (asyncio reads 256 KiB at a time) and one unsent
# state (40 turns of 4,000 characters and 200 parts, 300 spans: under 512 KiB); and the bridge's
# backlog of microphone frames (100 ms at 48 kHz each). About 95 MiB; the fuzz test holds the
# server's RSS growth to it.
MEMORY_BOUND_BYTES = (MAX_TABS * (QUEUE_MAX_BYTES + MAX_MESSAGE_BYTES + 256 * 1024 + 512 * 1024)
                      + MAX_BACKLOG * (MIC_HEADER.size + 2 * 48_000 * MAX_MIC_MS // 1000))
LOCKED = "Another tab is talking to this agent; this one only watches. Close the other tab or press Take over."
TAKEN = "Another tab took over this conversation; this one only watches now."
READ_ONLY = "This tab only watches the conversation; press Take over to talk."
STATE = object()  # in a Conn's queue: send the newest state now
CLOSE_COUNTERS = {1009: "closed_too_big", 1002: "closed_bad_frame", 1007: "closed_bad_frame"}
COUNTERS = (
    "connects",  # WebSockets accepted
    "read_only",  # of them, tabs that connected while another held the conversation
    "takeovers",
    "refused_token",  # WebSockets without the per-launch token (closed 4401)
    "refused_origin",  # WebSockets from another site's page or under a foreign Host (closed 4403)
    "refused_tabs",  # WebSockets beyond MAX_TABS (closed 1013)
    "refused_http",  # HTTP requests refused by net.SameOrigin (403)
    "mic_frames",  # microphone frames sent to the bus
    "texts",  # typed messages sent to the bus
    "bad_text",  # text frames refused: not JSON, the wrong shape, an unknown type, a refused setting
    "bad_audio",  # binary frames refused: not a microphone frame (header, rate, odd or too many bytes)
    "closed_too_big",  # connections closed for a frame over MAX_MESSAGE_BYTES (1009)
    "closed_bad_frame",  # connections closed for a frame the WebSocket protocol forbids (1002, 1007)
    "read_only_refused",  # well-formed input from a tab that does not hold the conversation
    "resets_refused",  # resets faster than 4 a second
    "dropped_out",  # messages not sent to a tab that did not read them (QUEUE_MAX_BYTES)
    "dropped_in",  # frames not sent to the bus: its backlog was full (bridge.MAX_BACKLOG)
)
BAD_FRAMES = ("bad_text", "bad_audio", "closed_too_big", "closed_bad_frame")


class Conn:
    """One tab's WebSocket and what waits to go to it: the newest state (a newer one replaces it
    unsent) and a queue of audio, notices and control messages, bounded by ``QUEUE_MAX_BYTES``
    (beyond it audio and notices are dropped and counted; control messages always go)."""

    def __init__(self, ws, client: str, counters: dict):
        self.ws = ws
        self.client = client
        self.counters = counters
        self.queue: asyncio.Queue = asyncio.Queue()
        self.state: str | None = None  # the newest state, not sent yet
        self.queued_bytes = 0
        self.told_audio = False  # the tab was told once why its microphone frames are refused

    def push(self, msg: bytes | str, control: bool = False) -> None:
        if not control and self.queued_bytes + len(msg) > QUEUE_MAX_BYTES:
            self.counters["dropped_out"] += 1
            return
        self.queued_bytes += len(msg)
        self.queue.put_nowait(msg)

    def push_state(self, text: str) -> None:
        if self.state is None:
            self.queue.put_nowait(STATE)
        self.state = text

    def flush(self) -> None:
        """Drop the queued audio and notices (the tab lost the conversation: they are stale)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0
        if self.state is not None:
            self.queue.put_nowait(STATE)


def notice(text: str) -> str:
    return json.dumps({"type": "notice", "message": text[:MAX_NOTICE_CHARS]})


class WebApp:
    """The server: the bridge, who holds the conversation, and the FastAPI + Gradio app."""

    def __init__(self, cfg: Config, clock: Clock, say=None, voices: list[str] | None = None):
        """``voices``: what the page offers for ``tts.voice`` ("" = the engine's default), listed
        by the TTS package for the launcher; without it, the default and the configured voice."""
        self.cfg = cfg
        self.clock = clock
        self.say = say or (lambda line: print(f"[rtchat] {line}", file=sys.stderr, flush=True))
        self.token = secrets.token_urlsafe(24)
        self.holder: Conn | None = None  # touched on the server's event loop only
        self.conns: set[Conn] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.settings = self._initial_settings()
        self.voices = list(voices) if voices is not None else [""] + ([cfg.tts.voice] if cfg.tts.voice else [])
        self.last_reset_ns = 0
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.bridge = Bridge(cfg.bus, cfg.run.id, clock, self._send, stats=self.stats)
        self.app = self._build()
        self.server = None
        self.thread: threading.Thread | None = None

    def _initial_settings(self) -> dict:
        a = self.cfg.agent
        out = {f"agent.{k.split('.', 1)[1]}": getattr(a, k.split(".", 1)[1]) for k in CONTROL_KEYS if k.startswith("agent.")}
        out["tts.voice"] = self.cfg.tts.voice
        return out

    def stats(self) -> dict[str, int]:
        """The counters, the refused frames in all (``bad_frames``) and the bridge's (``bus_…``)."""
        out = dict(self.counters)
        out["bad_frames"] = sum(out[k] for k in BAD_FRAMES)
        out["tabs"] = len(self.conns)
        out.update({f"bus_{k}": v for k, v in self.bridge.counters.items()})
        return out

    # ---------------------------------------------------------------- bridge → pages

    def _send(self, msg) -> None:
        """From the bridge thread: a state (to every tab), a cancel or a piece of audio (to the holder)."""
        loop = self.loop
        if not self.conns or loop is None or loop.is_closed():
            return
        if isinstance(msg, dict):
            loop.call_soon_threadsafe(self._deliver, msg["type"], json.dumps(msg))
        else:
            loop.call_soon_threadsafe(self._deliver, "audio", msg)

    def _deliver(self, kind: str, payload: bytes | str) -> None:
        if kind == "state":
            for conn in self.conns:
                conn.push_state(payload)
        elif self.holder is not None:
            self.holder.push(payload, control=kind == "cancel")

    # ---------------------------------------------------------------- page → bus

    def user_text(self, text: str) -> None:
        text = " ".join(str(text).split())[:MAX_TEXT_CHARS]
        if text:
            self._submit(UserText(text=text), "texts")

    def _submit(self, ev, counter: str) -> None:
        self.counters[counter if self.bridge.submit(ev) else "dropped_in"] += 1

    def reset(self, why: str) -> str:
        now = self.clock.now_ns()
        if now - self.last_reset_ns < RESET_MIN_GAP_NS:
            self.counters["resets_refused"] += 1
            return "reset ignored: resets come faster than 4 a second"
        self.last_reset_ns = now
        self.bridge.submit(Reset(reason=why))
        return "new conversation"

    def configure(self, changes: dict) -> str:
        """Publish the settings that differ from the current ones; say when they apply."""
        changes = {k: v for k, v in changes.items() if self.settings.get(k) != v}
        if not changes:
            return "nothing changed"
        try:
            changes = check_changes(self.cfg, changes)
        except ValueError as exc:
            self.counters["bad_text"] += 1
            self.bridge.note(f"setting refused: {exc}"[:MAX_NOTICE_CHARS])
            return f"refused: {exc}"
        self.settings.update(changes)
        self.bridge.submit(ConfigChange(changes=changes))
        now = [k for k in changes if k in AT_ONCE]
        later = [k for k in changes if k in AT_RESET]
        parts = []
        if now:
            parts.append("applied now: " + ", ".join(k.split(".", 1)[1] for k in now))
        if later:
            parts.append("applied at the next reset: " + ", ".join(k.split(".", 1)[1] for k in later))
        if "agent.summary" in changes:
            _, cut = clip_summary(str(changes["agent.summary"]), self.cfg.agent.max_summary_chars)
            if cut:
                parts.append(cut)
                self.bridge.note(cut)
        return "; ".join(parts)

    def on_text(self, raw: str, conn: Conn) -> None:
        """A text frame from a tab: refused (counted, the tab told why), or what it asks for done."""
        try:
            msg = parse_text(raw)
        except BadMessage as exc:
            self.counters["bad_text"] += 1
            conn.push(notice(str(exc)))
            return
        if conn is not self.holder:
            self.counters["read_only_refused"] += 1
            conn.push(notice(READ_ONLY))
            return
        reply = None
        if msg["type"] == "text":
            self.user_text(msg["text"])
        elif msg["type"] == "reset":
            reply = self.reset("web page")
        else:
            reply = self.configure(msg["changes"])
        if reply:
            conn.push(notice(reply))

    def on_mic(self, data: bytes, conn: Conn) -> None:
        """A binary frame from a tab: a microphone frame for the bus, or refused (counted; the
        tab is told once, not 50 times a second)."""
        try:
            pcm, sr_hz = parse_mic(data)
        except BadMessage as exc:
            self.counters["bad_audio"] += 1
            if not conn.told_audio:
                conn.told_audio = True
                conn.push(notice(f"microphone frames refused: {exc}"))
            return
        if conn is not self.holder:
            self.counters["read_only_refused"] += 1
            return
        self.counters["mic_frames" if self.bridge.mic_frame(pcm, sr_hz) else "dropped_in"] += 1

    # ---------------------------------------------------------------- the app

    def _build(self):
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse
        from fastapi.staticfiles import StaticFiles

        app = FastAPI()
        app.mount("/rtchat/static", StaticFiles(directory=STATIC), name="rtchat-static")

        @app.websocket("/rtchat/ws")
        async def ws_route(ws: WebSocket):  # WebSocket imported at module level: FastAPI resolves the annotation
            await self._serve(ws)

        @app.get("/rtchat/status")
        async def status_route(request: Request):  # the counters, for a script or a test holding the token
            if not self._has_token(request.query_params.get("token", "")):
                return JSONResponse({"error": "not logged in: the status needs the page's token (?token=…)"}, 401)
            return JSONResponse({"counters": self.stats(), "holder": self.holder is not None})

        import gradio as gr

        from rtchat.ui.web.page import build_blocks

        auth = parse_auth(self.cfg.ui.auth)
        blocks = build_blocks(self)
        js = ("() => { const s = document.createElement('script'); s.src = '/rtchat/static/rtchat.js'; "
              "document.head.appendChild(s); }")
        head = '<link rel="stylesheet" href="/rtchat/static/rtchat.css">'
        app = gr.mount_gradio_app(app, blocks, path="/", auth=auth, js=js, head=head, footer_links=[],
                                  server_name=self.cfg.ui.host, server_port=self.cfg.ui.port,
                                  max_file_size="1mb")  # the page uploads nothing; Gradio's route takes files
        app.add_middleware(SameOrigin, bind_host=self.cfg.ui.host, refused=self._refused_http)
        return app

    def _refused_http(self, why: str) -> None:
        self.counters["refused_http"] += 1
        log.info("refused an HTTP request: %s", why)

    def _has_token(self, token: str) -> bool:
        return secrets.compare_digest(token.encode("utf-8", "replace"), self.token.encode())

    def _refusal(self, ws) -> tuple[str, int, str] | None:
        """(counter, close code, reason) when this WebSocket may not talk to the agent."""
        if not self._has_token(ws.query_params.get("token", "")):
            return "refused_token", 4401, "not logged in: reload the page"
        why = foreign({k.lower(): v for k, v in ws.headers.items()}, self.cfg.ui.host)
        if why is not None:  # another site's page in the user's browser
            reason = f"refused: {why}".encode()[:123].decode(errors="ignore")  # a close reason is at most 123 bytes
            return "refused_origin", 4403, reason
        if len(self.conns) >= MAX_TABS:
            return "refused_tabs", 1013, f"too many tabs are open (at most {MAX_TABS}); close some"
        return None

    async def _serve(self, ws) -> None:
        refusal = self._refusal(ws)
        # accepted, then closed: a browser shows a close code and reason, never a refused handshake's status
        await ws.accept()
        self.loop = asyncio.get_running_loop()
        if refusal is not None:
            counter, code, reason = refusal
            self.counters[counter] += 1
            await ws.close(code=code, reason=reason)
            return
        conn = Conn(ws, ws.query_params.get("client", "")[:64], self.counters)
        self.conns.add(conn)
        self.counters["connects"] += 1
        conn.push(json.dumps({"type": "hello", "settings": self.settings, "voices": self.voices}), control=True)
        holder = self.holder
        if ws.query_params.get("takeover") == "1" or holder is None or conn.client and holder.client == conn.client:
            self._hold(conn)
        else:
            self.counters["read_only"] += 1
            conn.push(json.dumps({"type": "locked", "message": LOCKED}), control=True)
        self.bridge.resend_state()
        sender = asyncio.create_task(self._sender(conn))
        try:
            await self._receive(conn)
        finally:
            self.conns.discard(conn)
            if self.holder is conn:
                self.holder = None
            sender.cancel()

    def _hold(self, conn: Conn) -> None:
        old, self.holder = self.holder, conn
        if old is not None:
            self.counters["takeovers"] += 1
            old.flush()
            old.push(json.dumps({"type": "cancel", "gen": -1, "turn": -1}), control=True)  # its audio stops
            old.push(json.dumps({"type": "taken", "message": TAKEN}), control=True)

    async def _receive(self, conn: Conn) -> None:
        while True:
            msg = await conn.ws.receive()
            if msg["type"] == "websocket.disconnect":
                # the WebSocket layer refused a frame (too big, or one the protocol forbids) and closed
                counter = CLOSE_COUNTERS.get(msg.get("code"))
                if counter is not None:
                    self.counters[counter] += 1
                    log.info("closed a tab's connection: %s (%s)", msg.get("reason") or counter, msg.get("code"))
                return
            if msg.get("bytes") is not None:
                self.on_mic(msg["bytes"], conn)
            elif msg.get("text") is not None:
                self.on_text(msg["text"], conn)

    async def _sender(self, conn: Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if item is STATE:
                    item, conn.state = conn.state, None
                    if item is None:
                        continue
                else:
                    conn.queued_bytes -= len(item)
                if isinstance(item, bytes):
                    await conn.ws.send_bytes(item)
                else:
                    await conn.ws.send_text(item)
        except Exception:  # the tab went away; the receiver ends the session
            return

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        import uvicorn

        sock = listen_socket(self.cfg.ui.host, self.cfg.ui.port)  # a taken port is a clear error, before anything starts
        try:
            self.bridge.start()
        except BaseException:
            sock.close()
            raise
        config = uvicorn.Config(self.app, log_level="warning", ws="websockets-sansio", lifespan="on",
                                ws_max_size=MAX_MESSAGE_BYTES, ws_per_message_deflate=False)
        logging.getLogger("uvicorn.error").addFilter(quiet_bad_utf8)  # after uvicorn.Config set its logging up
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve_forever, args=(sock,), name="rtchat-web-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                self.bridge.close()
                raise RuntimeError(f"the web server on {self.cfg.ui.host}:{self.cfg.ui.port} stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the web server did not start within 30 s")
            time.sleep(0.05)

    def _serve_forever(self, sock) -> None:
        try:
            self.server.run(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits when it cannot start; start() reports it
            log.warning("the web server stopped (%s)", exc.code)
        finally:
            sock.close()

    @property
    def url(self) -> str:
        host = self.cfg.ui.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.cfg.ui.port}/"

    def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.bridge.close()


def quiet_bad_utf8(record: logging.LogRecord) -> bool:
    """uvicorn logs a tab's invalid UTF-8 with a traceback, as if the server had failed: it is the
    tab's fault, closed with 1007 and counted (``closed_bad_frame``), so it is not logged."""
    return not record.getMessage().startswith("Invalid UTF-8 sequence received from client")


def parse_auth(auth: str):
    """``ui.auth``: empty (no login), ``user:password``, or a file of such lines."""
    if not auth:
        return None
    path = Path(auth).expanduser()
    lines = path.read_text().splitlines() if ":" not in auth and path.is_file() else [auth]
    pairs = [tuple(line.strip().split(":", 1)) for line in lines if line.strip() and not line.startswith("#")]
    if not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise ValueError(f"ui.auth: got {auth!r}; allowed: empty, user:password, or a file with user:password lines")
    return list(pairs)


class WebFrontend:
    """The launcher's front-end object: the web server and its bridge run on their own threads."""

    def __init__(self, cfg: Config, clock: Clock, voices: list[str] | None = None):
        self.web = WebApp(cfg, clock, voices=voices)
        self.failed = False

    def start(self) -> None:
        self.web.start()
        self.web.say(f"open {self.web.url} in a browser to talk to the agent")

    def poll_items(self) -> list:
        return []

    def on_ready(self, item) -> None:  # nothing of ours is polled by the launcher
        pass

    @property
    def done(self) -> bool:
        return self.web.thread is not None and not self.web.thread.is_alive()

    def close(self) -> None:
        self.web.close()
