"""The web page's server: a FastAPI app with the page's WebSocket (``/rtchat/ws``) and static
files (``/rtchat/static``), the Gradio Blocks page (layout and controls) mounted at ``/``, served
by uvicorn on a thread; and ``WebFrontend``, the launcher's handle on it.

One conversation per server: the first WebSocket holds the lock; another tab is told so and may
take over (the old tab is then told it lost the conversation). Every WebSocket must show the
per-launch token, which the page gets through a Gradio event (behind Gradio's login when
``ui.auth`` is set), so a page that did not log in cannot talk to the agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import struct
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import WebSocket

from rtchat.bus.clock import Clock
from rtchat.bus.events import ConfigChange, Reset, UserText
from rtchat.configs.schema import Config
from rtchat.nodes.agent.transcript import clip_summary
from rtchat.nodes.asr.frames import SUPPORTED_RATES_HZ as MIC_RATES_HZ  # the rates the recogniser takes
from rtchat.ui.web.bridge import Bridge

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger("rtchat.web")

STATIC = Path(__file__).resolve().parent / "static"
MIC_HEADER = struct.Struct("<4sI")  # b"RTM1", sample rate; then int16 LE mono PCM
MIC_MAGIC = b"RTM1"
MAX_TEXT_CHARS = 2000
RESET_MIN_GAP_NS = 250_000_000  # faster resets are refused (and the page told)
QUEUE_MAX = 2000  # messages waiting for a slow page; beyond that state messages are dropped
LOCKED = "Another tab is talking to this agent; close it or press Take over."
TAKEN = "Another tab took over this conversation."

# ctl.config keys the page may change, and when they apply (nodes/agent/core.py, "Control")
AT_ONCE = ("agent.user_name", "agent.user_age", "agent.user_sex", "agent.agent_name", "agent.agent_age", "agent.agent_sex",
           "agent.interval_s", "agent.decoding", "agent.top_p", "agent.temperature", "agent.similarity_threshold", "tts.voice")
AT_RESET = ("agent.summary", "agent.agent_starts", "agent.opening_utterance")
CONTROL_KEYS = AT_ONCE + AT_RESET


def voices(cfg: Config) -> list[str]:
    """The TTS engine's voices as ``tts.voice`` accepts them ("" = the engine's default)."""
    tts = cfg.tts
    try:
        if tts.backend == "piper":
            from rtchat.nodes.tts.piper import voice_paths

            conf = json.loads(voice_paths(tts.model)[1].read_text())
            speakers = conf.get("speaker_id_map") or {}
            return sorted(speakers, key=speakers.get) if conf.get("num_speakers", 1) > 1 else [""]
        if tts.backend == "bark":
            from rtchat.nodes.tts.bark import VOICES

            return ["", *VOICES]
        if tts.backend == "espeak":
            from rtchat.nodes.tts.espeak import voices as espeak_voices

            return ["", *espeak_voices()]
    except Exception as exc:  # the list is a convenience; the TTS node validates
        log.warning("cannot list the %s voices: %s", tts.backend, exc)
    return [""] + ([tts.voice] if tts.voice else [])


def check_changes(cfg: Config, changes: dict) -> dict:
    """The changes as ctl.config carries them, or ValueError naming what is wrong."""
    unknown = sorted(set(changes) - set(CONTROL_KEYS))
    if unknown:
        raise ValueError(f"cannot change {', '.join(unknown)} from the page; allowed: {', '.join(CONTROL_KEYS)}")
    agent = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("agent.")}
    dataclasses.replace(cfg.agent, **agent)  # raises ValueError on a bad value
    return changes


class Conn:
    """One page's WebSocket: its outgoing queue (filled from the bridge thread through the loop)."""

    def __init__(self, ws, client: str):
        self.ws = ws
        self.client = client
        self.queue: asyncio.Queue = asyncio.Queue()
        self.dropped = 0

    def push(self, msg) -> None:
        if self.queue.qsize() >= QUEUE_MAX and isinstance(msg, dict) and msg.get("type") == "state":
            self.dropped += 1
            return
        self.queue.put_nowait(msg)


class WebApp:
    """The server: the bridge, the session lock and the FastAPI + Gradio app."""

    def __init__(self, cfg: Config, clock: Clock, say=None):
        self.cfg = cfg
        self.clock = clock
        self.say = say or (lambda line: print(f"[rtchat] {line}", file=sys.stderr, flush=True))
        self.token = secrets.token_urlsafe(24)
        self.holder: Conn | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.settings = self._initial_settings()
        self.last_reset_ns = 0
        self.counters = dict.fromkeys(("connects", "refused", "takeovers", "mic_frames", "bad_messages", "resets_refused"), 0)
        self.bridge = Bridge(cfg.bus, cfg.run.id, clock, self._send)
        self.app = self._build()
        self.server = None
        self.thread: threading.Thread | None = None

    def _initial_settings(self) -> dict:
        a = self.cfg.agent
        out = {f"agent.{k.split('.', 1)[1]}": getattr(a, k.split(".", 1)[1]) for k in CONTROL_KEYS if k.startswith("agent.")}
        out["tts.voice"] = self.cfg.tts.voice
        return out

    # ---------------------------------------------------------------- bridge → page (bridge thread)

    def _send(self, msg) -> None:
        conn, loop = self.holder, self.loop
        if conn is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(conn.push, msg)

    # ---------------------------------------------------------------- page → bus

    def user_text(self, text: str) -> None:
        text = " ".join(str(text).split())[:MAX_TEXT_CHARS]
        if text:
            self.bridge.submit(UserText(text=text))

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
            check_changes(self.cfg, changes)
        except (ValueError, TypeError) as exc:
            self.bridge.note(f"setting refused: {exc}")
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

    def on_text_message(self, raw: str) -> str | None:
        try:
            msg = json.loads(raw)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            self.counters["bad_messages"] += 1
            return "bad message: expected JSON with a type"
        if kind == "text":
            self.user_text(msg.get("text", ""))
        elif kind == "reset":
            return self.reset("web page")
        elif kind == "config" and isinstance(msg.get("changes"), dict):
            return self.configure(msg["changes"])
        elif kind == "played":
            pass
        else:
            self.counters["bad_messages"] += 1
            return f"unknown message type {kind!r}; allowed: text, reset, config, played"
        return None

    def on_mic(self, data: bytes) -> None:
        if len(data) < MIC_HEADER.size + 2:
            self.counters["bad_messages"] += 1
            return
        magic, sr_hz = MIC_HEADER.unpack_from(data)
        if magic != MIC_MAGIC or sr_hz not in MIC_RATES_HZ:
            self.counters["bad_messages"] += 1
            return
        self.counters["mic_frames"] += 1
        self.bridge.mic_frame(data[MIC_HEADER.size:], sr_hz)

    # ---------------------------------------------------------------- the app

    def _build(self):
        from fastapi import FastAPI
        from fastapi.staticfiles import StaticFiles

        app = FastAPI()
        app.mount("/rtchat/static", StaticFiles(directory=STATIC), name="rtchat-static")

        @app.websocket("/rtchat/ws")
        async def ws_route(ws: WebSocket):  # WebSocket imported at module level: FastAPI resolves the annotation
            await self._serve(ws)

        import gradio as gr

        from rtchat.ui.web.page import build_blocks

        auth = parse_auth(self.cfg.ui.auth)
        blocks = build_blocks(self)
        js = ("() => { const s = document.createElement('script'); s.src = '/rtchat/static/rtchat.js'; "
              "document.head.appendChild(s); }")
        head = '<link rel="stylesheet" href="/rtchat/static/rtchat.css">'
        return gr.mount_gradio_app(app, blocks, path="/", auth=auth, js=js, head=head, footer_links=[],
                                   server_name=self.cfg.ui.host, server_port=self.cfg.ui.port)

    async def _serve(self, ws) -> None:
        from starlette.websockets import WebSocketDisconnect

        if not secrets.compare_digest(ws.query_params.get("token", ""), self.token):
            await ws.close(code=4401, reason="not logged in: reload the page")
            return
        origin = ws.headers.get("origin")
        if origin and urlsplit(origin).netloc != ws.headers.get("host"):  # another site's page in the user's browser
            await ws.close(code=4403, reason="wrong origin")
            return
        await ws.accept()
        self.loop = asyncio.get_running_loop()
        client = ws.query_params.get("client", "")[:64]
        with self.lock:
            busy = self.holder is not None and self.holder.client != client
            if busy and ws.query_params.get("takeover") != "1":
                self.counters["refused"] += 1
                refused = True
            else:
                refused = False
                old, self.holder = self.holder, Conn(ws, client)
                conn = self.holder
        if refused:
            await ws.send_json({"type": "locked", "message": LOCKED})
            await ws.close(code=4409)
            return
        if old is not None:
            self.counters["takeovers"] += 1
            old.push({"type": "taken", "message": TAKEN})
            old.push(None)
        self.counters["connects"] += 1
        self.bridge.resend_state()
        sender = asyncio.create_task(self._sender(conn))
        try:
            await ws.send_json({"type": "hello", "settings": self.settings, "voices": voices(self.cfg)})
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    self.on_mic(msg["bytes"])
                elif msg.get("text") is not None:
                    reply = self.on_text_message(msg["text"])
                    if reply:
                        conn.push({"type": "notice", "message": reply})
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            with self.lock:
                if self.holder is conn:
                    self.holder = None
            sender.cancel()

    async def _sender(self, conn: Conn) -> None:
        try:
            while True:
                msg = await conn.queue.get()
                if msg is None:
                    await conn.ws.close(code=4409)
                    return
                if isinstance(msg, bytes):
                    await conn.ws.send_bytes(msg)
                else:
                    await conn.ws.send_text(json.dumps(msg))
        except Exception:  # the page went away; the receiver ends the session
            return

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        import uvicorn

        self.bridge.start()
        config = uvicorn.Config(self.app, host=self.cfg.ui.host, port=self.cfg.ui.port, log_level="warning",
                                ws="websockets-sansio", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve_forever, name="rtchat-web-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                self.bridge.close()
                raise RuntimeError(f"the web page could not listen on {self.cfg.ui.host}:{self.cfg.ui.port} (is the port "
                                   f"in use? choose another with ui.port=N)")
            if time.monotonic() > deadline:
                raise RuntimeError("the web server did not start within 30 s")
            time.sleep(0.05)

    def _serve_forever(self) -> None:
        try:
            self.server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind; start() reports it
            log.warning("the web server stopped (%s)", exc.code)

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

    def __init__(self, cfg: Config, clock: Clock):
        self.web = WebApp(cfg, clock)
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
