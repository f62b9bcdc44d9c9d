"""The bus side of the page: one thread owns a ``BusClient`` (ZeroMQ sockets are not thread-safe:
only this thread touches them). It folds the bus into a ``PageState``, hands the page what it
needs through ``send(message)`` (called on this thread: a JSON-able dict, or bytes for the agent's
audio), and publishes what the pages asked for (``submit``: any thread).

Mic frames keep one ``stream_pos`` counter for the server (a new page or a pause continues it, a
pause of more than ``GAP_NS`` jumps it ahead by the silence, so audio time stays wall time), at the
frame's own sample rate (a rate change rescales it); ``t_capture_ns`` is the receive time minus
the frame's duration.

What waits for the bus is bounded (``MAX_BACKLOG``: a page cannot queue without limit faster than
the bridge publishes); ``submit``/``mic_frame`` say False for what they dropped. With a ``stats``
callable the bridge heartbeats as the ``web`` node (``node.heartbeat``, its stats the page
server's counters), so they are recorded with the session and shown with the other nodes.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
from collections.abc import Callable

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock
from rtchat.bus.events import AgentCancel, AudioIn, Event, NodeHeartbeat, Reset, TtsAudio
from rtchat.bus.wire import WireError
from rtchat.configs.schema import BusConfig
from rtchat.ui.web.state import PageState

log = logging.getLogger(__name__)

TOPICS = ("agent.", "asr.", "vad.", "user.text", "audio.played", "tts.audio", "node.heartbeat", "node.restarted")
AUDIO_HEADER = struct.Struct("<4sIIIIB3x")  # magic, turn, gen, chunk, sr_hz, last  (then int16 LE PCM)
AUDIO_MAGIC = b"RTA1"
STATE_EVERY_NS = 100_000_000  # at most 10 state messages a second
GAP_NS = 500_000_000
MAX_BACKLOG = 500  # frames and events waiting for the bus (10 s of 20 ms microphone frames); beyond it they are dropped
NODE = "web"  # the name the bridge heartbeats under


def audio_message(ev: TtsAudio) -> bytes:
    return AUDIO_HEADER.pack(AUDIO_MAGIC, ev.turn, ev.gen, ev.chunk, ev.sr_hz, int(ev.last)) + ev.pcm


class MicStream:
    """stream_pos and t_capture_ns for browser mic frames (pure: times come in)."""

    def __init__(self):
        self.sr_hz = 0
        self.pos = 0
        self.last_end_ns: int | None = None

    def frame(self, pcm: bytes, sr_hz: int, now_ns: int) -> AudioIn:
        n = len(pcm) // 2
        dur = n * 1_000_000_000 // sr_hz
        if self.sr_hz and sr_hz != self.sr_hz:
            self.pos = self.pos * sr_hz // self.sr_hz
        self.sr_hz = sr_hz
        start = now_ns - dur
        if self.last_end_ns is not None and start - self.last_end_ns > GAP_NS:
            self.pos += (start - self.last_end_ns) * sr_hz // 1_000_000_000
        ev = AudioIn(pcm=pcm[: 2 * n], sr_hz=sr_hz, n_samples=n, stream_pos=self.pos, t_capture_ns=start)
        self.pos += n
        self.last_end_ns = now_ns
        return ev


class Bridge:
    def __init__(self, bus: BusConfig, session: str, clock: Clock, send: Callable[[object], None],
                 state: PageState | None = None, src: str = "web", stats: Callable[[], dict] | None = None):
        self.bus, self.session, self.clock, self.send, self.src, self.stats = bus, session, clock, send, src, stats
        self.state = state or PageState(stale_ns=int(3 * bus.heartbeat_interval_s * 1e9))
        self.outbox: queue.Queue[Event] = queue.Queue()
        self.mic = MicStream()
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.counters = dict.fromkeys(("events_in", "bad_frames", "published", "audio_out", "handler_errors"), 0)
        self.thread = threading.Thread(target=self._run, name="rtchat-web-bridge", daemon=True)
        self._sent_version = -1
        self._next_state = 0
        self._started_ns = 0
        self._next_beat = 0
        self._loops = 0

    # ---------------------------------------------------------------- any thread

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        if not self.ready.wait(timeout_s):
            raise RuntimeError(f"the web bridge did not reach the bus within {timeout_s:g} s")
        if self.error is not None:
            raise RuntimeError(f"the web bridge could not start: {self.error}")

    def _put(self, item) -> bool:
        if self.outbox.qsize() >= MAX_BACKLOG:
            return False
        self.outbox.put(item)
        return True

    def submit(self, ev: Event) -> bool:
        """Publish ev (any thread); False when the backlog is full and it was dropped."""
        return self._put(ev)

    def mic_frame(self, pcm: bytes, sr_hz: int) -> bool:
        """A browser mic frame received now (any thread: the position is assigned here, in order);
        False when the backlog is full and it was dropped."""
        return self._put(("mic", pcm, sr_hz, self.clock.now_ns()))

    def note(self, text: str) -> None:
        """A line for the page's notes (any thread: the state is only touched on the bridge thread)."""
        self._put(("note", text))

    def resend_state(self) -> None:
        self._sent_version = -1

    def close(self) -> None:
        self.stop_flag.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    # ---------------------------------------------------------------- the bridge thread

    def _run(self) -> None:
        try:
            client = BusClient(self.bus, src=self.src, session=self.session, clock=self.clock, topics=TOPICS)
            client.handshake(int(self.bus.handshake_timeout_s * 1e9))
        except Exception as exc:  # reported by start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self._started_ns = self.clock.now_ns()
        try:
            while not self.stop_flag.is_set():
                for frames in client.receive(20):
                    self._on_frames(client, frames)
                self._publish(client)
                self._maybe_state()
                self._maybe_heartbeat(client)
                self._loops += 1
        finally:
            client.close()

    def _on_frames(self, client: BusClient, frames: list[bytes]) -> None:
        try:
            ev = client.decode(frames).event
        except WireError as exc:
            self.counters["bad_frames"] += 1
            log.warning("bad frame on the bus: %s", exc)
            return
        self.counters["events_in"] += 1
        try:
            self.state.on_event(ev, self.clock.now_ns())
            if isinstance(ev, TtsAudio):
                self.counters["audio_out"] += 1
                self.send(audio_message(ev))
            elif isinstance(ev, AgentCancel):
                self.send({"type": "cancel", "gen": ev.gen, "turn": ev.turn})
            elif isinstance(ev, Reset):
                self.send({"type": "cancel", "gen": -1, "turn": -1})  # stop and flush all audio
        except Exception:  # the page must not take the bridge down
            self.counters["handler_errors"] += 1
            log.exception("web bridge: handling %s failed", type(ev).__name__)

    def _publish(self, client: BusClient) -> None:
        while True:
            try:
                item = self.outbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple) and item[0] == "note":
                self.state.note(item[1])
                continue
            if isinstance(item, tuple):
                _, pcm, sr_hz, at_ns = item
                item = self.mic.frame(pcm, sr_hz, at_ns)
            try:
                client.publish(item)  # our own user.text / ctl.reset come back through the bus and are folded then
            except Exception:  # one event that cannot go out must not end the page's way to the bus
                self.counters["handler_errors"] += 1
                log.exception("web bridge: publishing %s failed", type(item).__name__)
                continue
            self.counters["published"] += 1

    def _maybe_heartbeat(self, client: BusClient) -> None:
        now = self.clock.now_ns()
        if self.stats is None or now < self._next_beat:
            return
        self._next_beat = now + int(self.bus.heartbeat_interval_s * 1e9)
        try:
            client.publish(NodeHeartbeat(node=NODE, pid=os.getpid(), uptime_ns=now - self._started_ns,
                                         stats=self.stats(), loops=self._loops))
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("web bridge: the heartbeat failed")

    def _maybe_state(self) -> None:
        now = self.clock.now_ns()
        if now < self._next_state:
            return
        # the view changes with time too (timeline, speaking flags): at least once a second
        if self.state.version == self._sent_version and now < self._next_state + 900_000_000:
            return
        self._sent_version = self.state.version
        self._next_state = now + STATE_EVERY_NS
        try:
            self.send(self.state.snapshot(now))
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("web bridge: sending the state failed")
