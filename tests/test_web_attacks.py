"""The web page under attack: a seeded fuzz of 10,000 WebSocket frames, wrong or missing tokens,
other sites' pages, 20 tabs at once, a taken port. The server must stay up, the tab holding the
conversation must keep working, every refused frame must be counted, memory must stay within
``app.MEMORY_BOUND_BYTES``, and nothing refused may reach the bus."""

from __future__ import annotations

import base64
import json
import os
import queue
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from test_web_app import Spy, free_port, is_type, mic, recv_until, web, ws_url  # noqa: F401  (web: a fixture)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from rtchat.bus.events import AudioIn, NodeHeartbeat, UserText
from rtchat.ui.web.app import BAD_FRAMES, COUNTERS, LOCKED, MEMORY_BOUND_BYTES, QUEUE_MAX_BYTES, READ_ONLY, STATE, Conn
from rtchat.ui.web.protocol import MAX_MESSAGE_BYTES

HERE = Path(__file__).resolve().parent
TEXT, BINARY, CONT, CLOSE, PING = 1, 2, 0, 8, 9
RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)  # what the recogniser takes


# ---------------------------------------------------------------- a client that sends anything


def wire(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True, declared: int | None = None) -> bytes:
    """One WebSocket frame as a client sends it (masked with a zero key: the payload as is)."""
    n = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask | n])
    elif n < 1 << 16:
        head += bytes([mask | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask | 127]) + struct.pack(">Q", n)
    return head + (b"\0\0\0\0" if masked else b"") + payload


class RawWs:
    """A WebSocket on a plain socket: it sends frames as bytes, so it can send what no library
    would; a thread reads what the server sends (``events``: ("text", str), ("close", code,
    reason), ("gone",) when the connection ended)."""

    def __init__(self, port: int, query: str, origin: str | None = None, host: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        lines = [f"GET /rtchat/ws?{query} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
                 "Sec-WebSocket-Version: 13"] + ([f"Origin: {origin}"] if origin else [])
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.events: queue.Queue = queue.Queue()
        self.close_reason = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read(self) -> None:
        try:
            while True:
                b0, b1 = self._exact(2)
                n = b1 & 0x7F
                if n >= 126:
                    n = int.from_bytes(self._exact(2 if n == 126 else 8), "big")
                payload = self._exact(n)
                if b0 & 0x0F == CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.events.put(("close", code, payload[2:].decode(errors="replace")))
                    return
                if b0 & 0x0F == TEXT:
                    self.events.put(("text", payload.decode()))
        except OSError:
            pass
        finally:
            self.events.put(("gone",))

    def send(self, data: bytes) -> bool:
        """False when the server had already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def closed_with(self, timeout_s: float = 10.0) -> int | None:
        """The code of the server's close frame once the connection ended (None: it ended without one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if ev[0] == "close":
                self.close_reason = ev[2]
                return ev[1]
            if ev[0] == "gone":
                return None

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------- the fuzz

# what the server does with each kind of frame from a tab that only watches the conversation
EXPECT = {
    # refused and counted; the connection stays (a text frame is told why)
    "bad_json": "bad_text", "not_an_object": "bad_text", "unknown_type": "bad_text", "wrong_shape": "bad_text",
    "not_finite": "bad_text", "deep_nesting": "bad_text", "lone_surrogate": "bad_text", "audio_as_text": "bad_text",
    "empty_text": "bad_text",
    "text_as_binary": "bad_audio", "header_cut": "bad_audio", "header_only": "bad_audio", "odd_bytes": "bad_audio",
    "wrong_magic": "bad_audio", "bad_rate": "bad_audio", "too_long_audio": "bad_audio", "empty_binary": "bad_audio",
    # well-formed, but from a tab that does not hold the conversation
    "good_text": "read_only_refused", "good_mic": "read_only_refused", "bad_setting": "read_only_refused",
    "ping": None,  # answered with a pong
    # the WebSocket layer closes the connection
    "huge_declared": "closed_too_big", "huge_streamed": "closed_too_big", "over_limit": "closed_too_big",
    "fragments_over": "closed_too_big",
    "bad_utf8": "closed_bad_frame", "bad_opcode": "closed_bad_frame", "rsv_bits": "closed_bad_frame",
    "unmasked": "closed_bad_frame", "orphan_continuation": "closed_bad_frame", "big_control": "closed_bad_frame",
    "fragmented_control": "closed_bad_frame",
    "cut_off": None,  # half a frame, then the client hangs up: no frame arrived
}
CLOSE_CODES = {"closed_too_big": 1009, "closed_bad_frame": 1002}  # 1007 for invalid UTF-8
WEIGHTS = {
    "bad_json": 8, "not_an_object": 5, "unknown_type": 6, "wrong_shape": 10, "not_finite": 3, "deep_nesting": 1,
    "lone_surrogate": 2, "audio_as_text": 3, "empty_text": 1, "text_as_binary": 4, "header_cut": 4, "header_only": 2,
    "odd_bytes": 5, "wrong_magic": 4, "bad_rate": 4, "too_long_audio": 2, "empty_binary": 1, "good_text": 8,
    "good_mic": 14, "bad_setting": 3, "ping": 2,
    "huge_declared": 0.3, "huge_streamed": 0.2, "over_limit": 0.3, "fragments_over": 0.2, "bad_utf8": 0.5,
    "bad_opcode": 0.5, "rsv_bits": 0.3, "unmasked": 0.3, "orphan_continuation": 0.3, "big_control": 0.2,
    "fragmented_control": 0.2, "cut_off": 0.2,
}
KILLS = {k for k, v in EXPECT.items() if v in CLOSE_CODES} | {"cut_off"}


def mic_frame(sr: int, n: int, value: int = 100, magic: bytes = b"RTM1") -> bytes:
    return magic + struct.pack("<I", sr) + struct.pack("<h", value) * n


def good_text(rng: random.Random) -> str:
    return json.dumps({"type": "text", "text": f"fuzz {rng.randrange(10**9)}"})


def message(kind: str, rng: random.Random) -> str | bytes:
    """One text (str) or binary (bytes) message of this kind."""
    if kind == "bad_json":
        good = rng.choice([good_text(rng), '{"type": "config", "changes": {"agent.top_p": 0.5}}', '{"type": "reset"}'])
        return rng.choice([good[: rng.randrange(1, len(good))], "".join(chr(rng.randrange(32, 127)) for _ in range(20)),
                           "{'type': 'text'}", '{"type": "text",}', "\u00e9\u00e8\u4e2d"])
    if kind == "not_an_object":
        return rng.choice(["1", "-0.5", "[1, 2]", "[]", '"text"', "null", "true", '[{"type": "text", "text": "hi"}]'])
    if kind == "unknown_type":
        return json.dumps({"type": rng.choice(["dance", "TEXT", "played", "takeover", "", "x" * 500, "__proto__"])})
    if kind == "wrong_shape":
        return json.dumps(rng.choice([
            {"type": "text", "text": rng.choice([5, 1.5, None, True, [1], {"a": 1}])}, {"type": "text"},
            {"type": "text", "text": "hi", "extra": 1}, {"type": "reset", "why": "x"}, {"text": "hi"},
            {"type": rng.choice([5, None, ["text"], {"t": 1}])}, {"type": "config"},
            {"type": "config", "changes": rng.choice([[1], "agent.top_p=1", 5, None])},
        ]))
    if kind == "not_finite":
        value = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
        return f'{{"type": "config", "changes": {{"agent.{rng.choice(["top_p", "interval_s"])}": {value}}}}}'
    if kind == "deep_nesting":
        depth = rng.randrange(2_000, MAX_MESSAGE_BYTES // 2 - 64)
        return rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])[:MAX_MESSAGE_BYTES - 64]
    if kind == "lone_surrogate":
        return json.dumps({"type": "text", "text": "hi"}).replace("hi", rng.choice(["\\ud800", "a\\udfffb", "\\ud83d"]))
    if kind == "audio_as_text":
        return mic_frame(48000, 960).decode("latin-1")
    if kind == "empty_text":
        return ""
    if kind == "text_as_binary":
        return good_text(rng).encode()
    sr = rng.choice(RATES)
    if kind == "header_cut":
        return mic_frame(sr, 0)[: rng.randrange(1, 8)]
    if kind == "header_only":
        return mic_frame(sr, 0)
    if kind == "odd_bytes":
        return mic_frame(sr, rng.randrange(0, sr // 50)) + b"\x01"
    if kind == "wrong_magic":
        return mic_frame(sr, sr // 50, magic=rng.choice([b"RTA1", b"rtm1", b"\0\0\0\0", b"RIFF"]))
    if kind == "bad_rate":
        return mic_frame(rng.choice([0, 1, 7999, 12000, 96000, 192000, 2**32 - 1, rng.randrange(2**32)]), 320)
    if kind == "too_long_audio":
        return mic_frame(sr, sr // 10 + rng.randrange(1, sr // 10))
    if kind == "empty_binary":
        return b""
    if kind == "good_text":
        return good_text(rng)
    if kind == "good_mic":
        return mic_frame(sr, sr // 50, value=-1)
    if kind == "ping":
        return b"are you there"  # sent as a ping frame
    if kind == "bad_setting":
        return json.dumps({"type": "config", "changes": rng.choice([{"agent.top_p": "high"}, {"agent.user_name": [1]},
                                                                    {"bus.hwm": 1}, {"agent.decoding": "beam"}])})
    raise ValueError(kind)


def kill_frames(kind: str, rng: random.Random) -> list[bytes]:
    """The wire bytes of a frame the WebSocket layer refuses (sent in this order)."""
    op = rng.choice([TEXT, BINARY])
    if kind == "huge_declared":  # only the header: the length alone must be enough to refuse it
        return [wire(op, b"", declared=rng.randrange(2**31, 2**63))]
    if kind == "huge_streamed":  # 1 GiB announced, then data as fast as the socket takes it
        return [wire(op, b"", declared=2**30)] + [b"\0" * 65536] * 64
    if kind == "over_limit":
        return [wire(BINARY, b"\0" * (MAX_MESSAGE_BYTES + rng.randrange(1, 65536)))]
    if kind == "fragments_over":  # each fragment small, the message too big
        return [wire(TEXT, b"a" * 16384, fin=False)] + [wire(CONT, b"a" * 16384, fin=False)] * 4 + [wire(CONT, b"a", fin=True)]
    if kind == "bad_utf8":
        return [wire(TEXT, rng.choice([b"\xff\xfe", b"\xc3\x28", b'{"type": "text", "text": "\xe2\x82"}', b"\xed\xa0\x80"]))]
    if kind == "bad_opcode":
        return [wire(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"hello")]
    if kind == "rsv_bits":
        return [wire(TEXT, good_text(rng).encode(), rsv=rng.randrange(1, 8))]
    if kind == "unmasked":
        return [wire(TEXT, good_text(rng).encode(), masked=False)]
    if kind == "orphan_continuation":
        return [wire(CONT, b"hello")]
    if kind == "big_control":
        return [wire(PING, b"p" * rng.randrange(126, 300))]
    if kind == "fragmented_control":
        return [wire(PING, b"p", fin=False)]
    if kind == "cut_off":
        frame = wire(TEXT, good_text(rng).encode())
        return [frame[: rng.randrange(1, len(frame))]]
    raise ValueError(kind)


def fuzz(seed: int, n: int, kills: bool = True) -> list[tuple[str, object]]:
    """n seeded (kind, frame) pairs: a message (str | bytes) or, for kinds in KILLS, wire bytes."""
    rng = random.Random(seed)
    kinds = [k for k in WEIGHTS if kills or k not in KILLS]
    out = []
    for kind in rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds], k=n):
        out.append((kind, kill_frames(kind, rng) if kind in KILLS else message(kind, rng)))
    return out


COUNTED = (*BAD_FRAMES, "read_only_refused")
HOLDER = EXPECT | {"good_text": None, "good_mic": None, "bad_setting": "bad_text"}  # from the tab holding the conversation


def expected_counts(frames, expect=EXPECT) -> dict[str, int]:
    """What the server's counters in COUNTED should grow by."""
    got = Counter(expect[kind] for kind, _ in frames if expect[kind] is not None)
    return {k: got[k] for k in COUNTED}


# ---------------------------------------------------------------- the server in a process of its own


class Server:
    """tests/webserver_proc.py on a real bus: its token, pid, status and stderr."""

    def __init__(self, bus, tmp: Path):
        self.port = free_port()
        self.stderr_path = tmp / "server.err"
        with self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, str(HERE / "webserver_proc.py"), bus.pub_endpoint,
                                          bus.sub_endpoint, str(self.port)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()  # once it listens (empty: it exited)
        assert line, "the server did not start:\n" + self.stderr()
        info = json.loads(line)
        self.token, self.pid = info["token"], info["pid"]

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def counters(self) -> dict:
        r = httpx.get(f"http://127.0.0.1:{self.port}/rtchat/status", params={"token": self.token}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["counters"]

    def stop(self) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.proc.stdout.close()


class Fuzzer:
    """Sends fuzz frames from tabs that only watch; a new connection after each one the server closed.

    A frame the WebSocket layer refuses ends the connection at once: what arrived with it in the
    same read is dropped unread and uncounted (uvicorn). So before each such frame the fuzzer
    makes sure the server has read what came before: it sends a message of an unknown type
    ``sync-N`` (counted as a bad text frame) and waits for the notice that answers it."""

    def __init__(self, server: Server):
        self.server, self.conn, self.tabs, self.syncs = server, None, 0, 0
        self.codes: dict[str, Counter] = {}  # kind → the close codes the server answered with

    def sync(self) -> None:
        self.syncs += 1
        tag = f"sync-{self.syncs}"
        self.conn.send(wire(TEXT, json.dumps({"type": tag}).encode()))
        while True:
            ev = self.conn.events.get(timeout=10)
            assert ev[0] == "text", ev
            if f"'{tag}'" in ev[1]:
                return

    def send(self, kind: str, frame) -> None:
        if self.conn is None:
            self.tabs += 1
            self.conn = RawWs(self.server.port, f"token={self.server.token}&client=fuzz-{self.tabs}")
        if kind not in KILLS:
            opcode = PING if kind == "ping" else BINARY if isinstance(frame, bytes) else TEXT
            self.conn.send(wire(opcode, frame if isinstance(frame, bytes) else frame.encode()))
            return
        self.sync()
        for data in frame:
            if not self.conn.send(data):
                break
        if kind == "cut_off":
            self.conn.sock.shutdown(socket.SHUT_WR)
        self.codes.setdefault(kind, Counter())[self.conn.closed_with()] += 1
        self.conn.close()
        self.conn = None

    def close(self) -> None:
        """Close the open tab once the server has read all it was sent: a socket closed with the
        server's replies unread goes out as a reset, and the frames still unread over there were
        lost (CI saw 20 of 10,000 uncounted)."""
        if self.conn is None:
            return
        tag = f"sync-{self.syncs + 1}"
        self.conn.send(wire(TEXT, json.dumps({"type": tag}).encode()))
        while True:
            ev = self.conn.events.get(timeout=10)
            if ev[0] == "gone":  # the server had closed it (a frame it ends tabs for): it read up to there
                break
            if ev[0] == "text" and f"'{tag}'" in ev[1]:
                self.syncs += 1  # the server read it: one more refused text to count
                break
        self.conn.close()


def arrived(spy: Spy, pred, timeout_s: float = 10.0) -> None:
    """Until the spy has seen an event for which pred is true."""
    deadline = time.monotonic() + timeout_s
    while not any(pred(ev) for ev in spy.seen):
        assert time.monotonic() < deadline, "not on the bus"
        spy.wait(object, timeout_s=0.2)


def wait_for(probe, timeout_s: float, what):
    """probe() until it returns something true; AssertionError saying what() did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what()} within {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_ten_thousand_fuzzed_frames_leave_the_server_up_the_holder_talking_and_memory_bounded(real_bus, tmp_path):
    server = Server(real_bus, tmp_path)
    spy = Spy(real_bus, topics=("user.text", "audio.in", "node.heartbeat"))
    fuzzer = Fuzzer(server)
    try:
        # the owner reads its messages only at the end: no keepalive pings, whose answers would wait unread
        with connect(f"ws://127.0.0.1:{server.port}/rtchat/ws?token={server.token}&client=owner", ping_interval=None) as owner:
            recv_until(owner, is_type("hello"))

            def owner_still_talks(k: int) -> None:
                owner.send(json.dumps({"type": "text", "text": f"owner check {k}"}))
                owner.send(mic(48000, 960, value=1000 + k))
                arrived(spy, lambda ev: isinstance(ev, UserText) and ev.text == f"owner check {k}")
                arrived(spy, lambda ev: isinstance(ev, AudioIn) and ev.pcm[:2] == struct.pack("<h", 1000 + k))

            for kind, frame in fuzz(seed=1, n=500):  # warm-up: every path once, before the memory is measured
                fuzzer.send(kind, frame)
            owner_still_talks(0)
            fuzzer.codes.clear()
            before_counts = server.counters()
            rss_before = server.rss()
            syncs_before, tabs_before = fuzzer.syncs, fuzzer.tabs

            frames = fuzz(seed=2026, n=10_000)
            for i, (kind, frame) in enumerate(frames, 1):
                fuzzer.send(kind, frame)
                if i % 1000 == 0:  # the holder's words and audio reach the bus all along
                    owner_still_talks(i // 1000)
            fuzzer.close()

            want = expected_counts(frames)
            want["bad_text"] += fuzzer.syncs - syncs_before
            delta = {}

            def all_counted():
                now = server.counters()
                delta.update({k: now[k] - before_counts[k] for k in COUNTED})
                return delta == want and now

            after = wait_for(all_counted, 60, lambda: f"every refused frame counted: want {want}, got {delta}")
            rss_after = server.rss()
            # the holder's tab shows its own words, back from the bus
            recv_until(owner, lambda m: is_type("state")(m) and any("owner check 10" in p.get("w", "")
                                                                     for t in m["transcript"] for p in t["parts"]))
            beat = spy.wait(NodeHeartbeat, keep=lambda ev: ev.node == "web" and ev.stats["bad_frames"] >= after["bad_frames"])
            assert beat, "the web node's heartbeat carries the counters"
        report = {
            "frames": len(frames), "by_kind": dict(Counter(k for k, _ in frames)), "counted": want,
            "bad_frames_total": sum(want[k] for k in BAD_FRAMES), "close_codes": {k: dict(v) for k, v in fuzzer.codes.items()},
            "tabs_opened": fuzzer.tabs - tabs_before, "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "bound_mib": round(MEMORY_BOUND_BYTES / 2**20, 1), "server_counters": after,
        }
        (tmp_path / "fuzz-report.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report))
        # what the server answered to each frame it refused by closing (when the close frame got through)
        for kind, codes in fuzzer.codes.items():
            allowed = {None} if kind == "cut_off" else {CLOSE_CODES[EXPECT[kind]], 1007 if kind == "bad_utf8" else None}
            assert set(codes) <= allowed | {None}, (kind, codes)
            assert kind == "cut_off" or codes[None] < sum(codes.values()), (kind, codes)  # at least one said why
        assert rss_after - rss_before < MEMORY_BOUND_BYTES, report
        # nothing from a watching tab reached the bus: every user.text and audio.in came from the holder
        assert {ev.text for ev in spy.seen if isinstance(ev, UserText)} == {f"owner check {k}" for k in range(11)}
        assert {ev.pcm[:2] for ev in spy.seen if isinstance(ev, AudioIn)} == {struct.pack("<h", 1000 + k) for k in range(11)}
        assert server.proc.poll() is None
    finally:
        fuzzer.close()
        spy.client.close()
        rc = server.stop()
    assert rc == 0
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


@pytest.mark.slow
def test_the_holders_bad_frames_are_refused_and_its_good_ones_reach_the_bus_in_order(web, real_bus):  # noqa: F811
    spy = Spy(real_bus)
    frames = fuzz(seed=7, n=600, kills=False)
    texts = []
    try:
        with connect(ws_url(web, "owner")) as ws:
            recv_until(ws, is_type("hello"))
            for kind, frame in frames:
                if kind == "ping":
                    continue
                if kind == "good_text":
                    texts.append(json.loads(frame)["text"])
                ws.send(frame)
            ws.send(json.dumps({"type": "text", "text": "the end"}))
            # audio.in and user.text share the bus's data socket: what the page sent before "the end" arrived before it
            assert spy.wait(UserText, keep=lambda ev: ev.text == "the end", timeout_s=30)
        mics = sum(kind == "good_mic" for kind, _ in frames)
        assert [ev.text for ev in spy.seen if isinstance(ev, UserText)] == [*texts, "the end"]
        assert sum(isinstance(ev, AudioIn) for ev in spy.seen) == mics
        assert {k: web.counters[k] for k in COUNTED} == expected_counts(frames, HOLDER)
        assert web.counters["mic_frames"] == mics and web.counters["read_only_refused"] == 0
        assert web.bridge.counters["handler_errors"] == 0
    finally:
        spy.client.close()


def test_wrong_or_missing_tokens_and_other_sites_are_refused_and_nothing_reaches_the_bus(web, real_bus):  # noqa: F811
    spy = Spy(real_bus)
    port, token = web.cfg.ui.port, web.token
    off_by_one = token[:-1] + ("A" if token[-1] != "A" else "B")
    cases = [  # (what, query, Origin, Host) → close code, reason
        ("no token", "client=x", None, None, 4401, "not logged in: reload the page"),
        ("a guessed token", "token=guess&client=x", None, None, 4401, "not logged in"),
        ("a token one character off", f"token={off_by_one}&client=x", None, None, 4401, "not logged in"),
        ("a non-ASCII token", "token=%C3%A9t%C3%A9&client=x", None, None, 4401, "not logged in"),
        ("a 4,000-character token", "token=" + "a" * 4000, None, None, 4401, "not logged in"),
        ("the token from another site's page", f"token={token}", "http://evil.example", None, 4403,
         "refused: Origin 'http://evil.example' is another site than '127.0.0.1:"),
        ("the token from a sandboxed frame or a file", f"token={token}", "null", None, 4403, "refused: Origin 'null'"),
        ("the token from another port", f"token={token}", f"http://127.0.0.1:{port + 1}", None, 4403,
         f"refused: Origin 'http://127.0.0.1:{port + 1}' is another site"),
        ("the token under a rebound name", f"token={token}", f"http://evil.example:{port}", f"evil.example:{port}", 4403,
         "refused: Host 'evil.example:"),
    ]
    try:
        for what, query, origin, host, code, reason in cases:
            ws = RawWs(port, query, origin=origin, host=host)
            ws.send(wire(TEXT, json.dumps({"type": "text", "text": f"intruder: {what}"}).encode()))
            ws.send(wire(BINARY, mic_frame(48000, 960, value=-7)))
            assert (ws.closed_with(), ws.close_reason[: len(reason)]) == (code, reason), what
            ws.close()
        with connect(ws_url(web, "owner")) as owner:  # the page itself, after them: its words are the first on the bus
            recv_until(owner, is_type("hello"))
            owner.send(json.dumps({"type": "text", "text": "only me"}))
            arrived(spy, lambda ev: isinstance(ev, UserText))
        assert [ev.text for ev in spy.seen if isinstance(ev, UserText)] == ["only me"]
        assert not [ev for ev in spy.seen if isinstance(ev, AudioIn)]
        assert (web.counters["refused_token"], web.counters["refused_origin"], web.counters["connects"]) == (5, 4, 1)

        # HTTP: requests that change something from another site's page, or under a rebound name, get 403
        base = f"http://127.0.0.1:{port}"
        evil = {"Origin": "http://evil.example"}
        r = httpx.post(f"{base}/gradio_api/queue/join", headers=evil, json={"fn_index": 0, "data": [], "session_hash": "x"})
        assert r.status_code == 403 and "Origin 'http://evil.example' is another site" in r.text  # the token's way in
        assert httpx.post(f"{base}/login", headers=evil, data={"username": "a", "password": "b"}).status_code == 403
        assert httpx.post(f"{base}/gradio_api/upload", headers={"Origin": "null"}, files={"files": b"x"}).status_code == 403
        r = httpx.get(f"{base}/", headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 403 and "not a loopback name" in r.text
        # the page's own requests, and reading the page from anywhere, pass (the browser keeps another site from reading it)
        assert httpx.post(f"{base}/gradio_api/queue/join", headers={"Origin": base}, json={}).status_code != 403
        assert httpx.get(f"{base}/", headers=evil).status_code == 200
        # the status needs the token
        assert httpx.get(f"{base}/rtchat/status").status_code == 401
        assert httpx.get(f"{base}/rtchat/status", params={"token": off_by_one}).status_code == 401
        status = httpx.get(f"{base}/rtchat/status", params={"token": token}).json()
        assert status["counters"]["refused_http"] == 4 and status["holder"] is False
    finally:
        spy.client.close()


def test_twenty_tabs_at_once_only_the_holder_talks_the_others_watch_or_are_refused(web, real_bus):  # noqa: F811
    spy = Spy(real_bus)
    results: list = [None] * 20
    start = threading.Barrier(20)

    def tab(i: int) -> None:
        token = web.token if i % 2 == 0 else f"stolen-{i}"  # half have the page's token, half do not
        start.wait()
        try:
            with connect(ws_url(web, f"tab{i}", token=token), ping_interval=None) as ws:
                ws.send(mic(48000, 960, value=-1 - i))
                ws.send(json.dumps({"type": "text", "text": f"tab {i}"}))
                locked = recv_until(ws, is_type("locked"))["message"]
                refused = recv_until(ws, is_type("notice"))["message"]  # the reply to its text, after its audio
                results[i] = ("watches", locked == LOCKED, refused)
        except ConnectionClosed as exc:
            results[i] = ("closed", exc.rcvd.code if exc.rcvd else None)

    try:
        with connect(ws_url(web, "owner")) as owner:
            recv_until(owner, is_type("hello"))
            threads = [threading.Thread(target=tab, args=(i,)) for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert results[0::2] == [("watches", True, READ_ONLY)] * 10, results
            assert results[1::2] == [("closed", 4401)] * 10, results
            assert web.holder.client == "owner" and web.thread.is_alive()
            owner.send(json.dumps({"type": "text", "text": "still mine"}))
            owner.send(mic(48000, 960, value=5))
            arrived(spy, lambda ev: isinstance(ev, AudioIn))
        assert [ev.text for ev in spy.seen if isinstance(ev, UserText)] == ["still mine"]
        assert [ev.pcm[:2] for ev in spy.seen if isinstance(ev, AudioIn)] == [struct.pack("<h", 5)]
        assert (web.counters["read_only"], web.counters["refused_token"], web.counters["read_only_refused"]) == (10, 10, 20)
    finally:
        spy.client.close()


def test_a_tab_that_does_not_read_costs_at_most_its_queue_and_one_state():
    counters = dict.fromkeys(COUNTERS, 0)
    conn = Conn(ws=None, client="a", counters=counters)
    piece = b"\0" * 4096  # the agent's audio, for a tab that never reads it
    for _ in range(1000):
        conn.push(piece)
    kept = QUEUE_MAX_BYTES // len(piece)
    assert conn.queued_bytes == kept * len(piece) and counters["dropped_out"] == 1000 - kept
    conn.push('{"type": "cancel", "gen": 3}', control=True)  # a control message always goes
    for i in range(100):
        conn.push_state(f'{{"type": "state", "n": {i}}}')
    assert conn.state == '{"type": "state", "n": 99}'
    items = [conn.queue.get_nowait() for _ in range(conn.queue.qsize())]
    assert len(items) == kept + 2 and items[-1] is STATE  # one state waits, the newest


@pytest.mark.slow
def test_a_taken_port_stops_the_launcher_with_a_clear_error_and_no_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "rtchat.launcher", "--ui", "gradio", f"ui.port={port}",
                            f"run.runs_dir={tmp_path / 'runs'}", "launcher.nodes=[logger]"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, r.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr and "choose another with ui.port=N" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
