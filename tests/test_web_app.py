"""The web server and its bridge on a real bus, driven by a WebSocket client (no browser)."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock
from rtchat.bus.events import AgentCancel, AudioIn, ConfigChange, Reset, TtsAudio, UserText
from rtchat.configs.schema import Config, RunConfig, UiConfig
from rtchat.ui.web.app import WebApp, parse_auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Spy:
    """Another bus participant: sees what the page published (``seen``: everything it received, in
    order), publishes what nodes would."""

    def __init__(self, bus, topics=("user.text", "audio.in")):
        self.client = BusClient(bus, src="spy", session="t", clock=Clock(), topics=topics)
        self.client.handshake(int(5e9))
        self.seen: list = []

    def wait(self, cls, n=1, timeout_s=5.0, keep=lambda ev: True) -> list:
        got, deadline = [], time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            for frames in self.client.receive(50):
                ev = self.client.decode(frames).event
                self.seen.append(ev)
                if isinstance(ev, cls) and keep(ev):
                    got.append(ev)
        return got

    def until(self, cls, stop, timeout_s=5.0) -> list:
        """Every cls event up to the first event ``stop`` accepts, which the page published after
        them: its arrival proves that everything published before it has arrived (one publisher,
        one proxy; ``receive`` drains the control socket again after each data batch)."""
        got, deadline = [], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for frames in self.client.receive(50):
                ev = self.client.decode(frames).event
                if isinstance(ev, cls):
                    got.append(ev)
                if stop(ev):
                    return got + [e for f in self.client.receive(0) if isinstance(e := self.client.decode(f).event, cls)]
        raise AssertionError(f"the event that ends the wait did not come in {timeout_s} s")


@pytest.fixture
def web(real_bus):
    cfg = Config(bus=real_bus, run=RunConfig(id="t"), ui=UiConfig(port=free_port()))
    app = WebApp(cfg, Clock(), say=lambda line: None)
    app.start()
    yield app
    app.close()


@pytest.fixture
def spy(real_bus):
    s = Spy(real_bus)
    yield s
    s.client.close()


def ws_url(web, client="a", token=None, takeover=False) -> str:
    url = f"ws://127.0.0.1:{web.cfg.ui.port}/rtchat/ws?token={token or web.token}&client={client}"
    return url + ("&takeover=1" if takeover else "")


def recv_until(ws, pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        msg = msg if isinstance(msg, bytes) else json.loads(msg)
        if pred(msg):
            return msg
    raise AssertionError("no such message")


def is_type(kind):
    return lambda m: isinstance(m, dict) and m["type"] == kind


def mic(sr: int, n: int, value: int = 100) -> bytes:
    return b"RTM1" + struct.pack("<I", sr) + struct.pack("<h", value) * n


def closed_with(ws) -> tuple[int, str]:
    """The close code and reason the server gave, once it closed the connection."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    return info.value.rcvd.code, info.value.rcvd.reason


def test_a_page_without_the_token_or_from_another_site_is_refused(web):
    with connect(ws_url(web, token="wrong")) as ws:
        assert closed_with(ws) == (4401, "not logged in: reload the page")
    with connect(ws_url(web), origin="http://evil.example") as ws:
        code, reason = closed_with(ws)
        assert code == 4403 and "'http://evil.example' is another site" in reason
    with connect(ws_url(web), origin=f"http://127.0.0.1:{web.cfg.ui.port}") as ws:  # the page itself
        assert recv_until(ws, is_type("hello"))
    assert (web.counters["connects"], web.counters["refused_token"], web.counters["refused_origin"]) == (1, 1, 1)


def test_text_mic_frames_and_agent_audio_go_both_ways(web, spy):
    with connect(ws_url(web)) as ws:
        hello = recv_until(ws, is_type("hello"))
        assert hello["settings"]["agent.top_p"] == web.cfg.agent.top_p and "" in hello["voices"]
        ws.send(json.dumps({"type": "text", "text": "  hello   there "}))
        (ev,) = spy.wait(UserText)
        assert ev.text == "hello there"
        state = recv_until(ws, lambda m: is_type("state")(m) and m["transcript"])
        assert state["transcript"][0]["who"] == "user" and state["transcript"][0]["parts"] == [{"w": "hello there"}]

        # mic frames carry their real rate; positions continue across a rate change
        before = time.time_ns()
        ws.send(mic(48000, 960))
        ws.send(mic(48000, 960))
        ws.send(mic(44100, 882))
        frames = spy.wait(AudioIn, n=3)
        assert [(f.sr_hz, f.n_samples, f.stream_pos) for f in frames] == [(48000, 960, 0), (48000, 960, 960),
                                                                          (44100, 882, 1920 * 44100 // 48000)]
        assert frames[0].t_capture_ns >= before - 20_000_000 and frames[0].pcm == struct.pack("<h", 100) * 960

        # the agent's audio reaches the page as binary pieces; a cancel as a message
        pcm = struct.pack("<h", 7) * 320
        spy.client.publish(TtsAudio(turn=3, gen=1, chunk=2, text="hi", pcm=pcm, sr_hz=22050, n_samples=320, last=True))
        piece = recv_until(ws, lambda m: isinstance(m, bytes))
        assert piece[:4] == b"RTA1" and struct.unpack_from("<IIIIB", piece, 4) == (3, 1, 2, 22050, 1) and piece[24:] == pcm
        spy.client.publish(AgentCancel(turn=3, gen=2))
        assert recv_until(ws, is_type("cancel"))["gen"] == 2
        # bad binary frames are dropped (the page is told once), the connection stays
        ws.send(b"xx")
        assert "microphone frames refused: a microphone frame of 2 bytes" in recv_until(ws, is_type("notice"))["message"]
        ws.send(b"NOPE" + b"\0" * 10)
        ws.send(mic(96000, 1920))  # a rate the recogniser does not take (the page asks its browser for 48 kHz then)
        ws.send(json.dumps({"type": "dance"}))
        assert "unknown message type 'dance'" in recv_until(ws, is_type("notice"))["message"]
        ws.send(json.dumps({"type": "text", "text": "still here"}))
        assert spy.wait(UserText)[0].text == "still here"
    assert (web.counters["bad_audio"], web.counters["bad_text"]) == (3, 1)


def test_one_conversation_per_server_a_second_tab_only_watches_and_may_take_over(web, spy):
    with connect(ws_url(web, "a")) as first:
        recv_until(first, is_type("hello"))
        with connect(ws_url(web, "b")) as second:
            assert "Another tab is talking to this agent" in recv_until(second, is_type("locked"))["message"]
            second.send(json.dumps({"type": "text", "text": "not mine to say"}))
            assert "only watches" in recv_until(second, is_type("notice"))["message"]
            first.send(json.dumps({"type": "text", "text": "the holder speaks"}))
            assert [ev.text for ev in spy.wait(UserText)] == ["the holder speaks"]  # the watcher's came first, and was refused
            # the watching tab sees the live view
            recv_until(second, lambda m: is_type("state")(m) and any(t["who"] == "user" for t in m["transcript"]))
        with connect(ws_url(web, "c", takeover=True)) as third:
            recv_until(third, is_type("hello"))
            assert "took over" in recv_until(first, is_type("taken"))["message"]
            third.send(json.dumps({"type": "text", "text": "mine now"}))
            assert spy.wait(UserText)[0].text == "mine now"
            assert web.holder.client == "c"
            first.send(json.dumps({"type": "text", "text": "the old tab"}))
            assert "only watches" in recv_until(first, is_type("notice"))["message"]
    assert web.counters["takeovers"] == 1 and web.counters["read_only"] == 1 and web.counters["read_only_refused"] == 2


def test_closing_the_tab_mid_sentence_frees_the_conversation(web, spy):
    ws = connect(ws_url(web, "a"))
    recv_until(ws, is_type("hello"))
    pcm = b"\1\0" * 2205
    for chunk in range(40):
        spy.client.publish(TtsAudio(turn=1, gen=0, chunk=chunk, text="w", pcm=pcm, sr_hz=22050, n_samples=2205, last=True))
    recv_until(ws, lambda m: isinstance(m, bytes))
    ws.close()  # mid-sentence: pieces are still coming
    for chunk in range(40, 80):
        spy.client.publish(TtsAudio(turn=1, gen=0, chunk=chunk, text="w", pcm=pcm, sr_hz=22050, n_samples=2205, last=True))
    deadline = time.monotonic() + 5
    while web.holder is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert web.holder is None
    with connect(ws_url(web, "b")) as again:  # a new tab gets the conversation, not a lock message
        assert recv_until(again, lambda m: is_type("hello")(m) or is_type("locked")(m))["type"] == "hello"
    assert web.bridge.counters["handler_errors"] == 0 and web.bridge.thread.is_alive()


def test_fifty_rapid_resets_are_rate_limited_and_the_page_stays_responsive(web, spy):
    with connect(ws_url(web)) as ws:
        recv_until(ws, is_type("hello"))
        for _ in range(50):
            ws.send(json.dumps({"type": "reset"}))
        recv_until(ws, lambda m: is_type("notice")(m) and "reset ignored" in m["message"])
        ws.send(json.dumps({"type": "text", "text": "after the resets"}))
        resets = spy.until(Reset, lambda ev: isinstance(ev, UserText))
        assert len(resets) >= 1 and len(resets) + web.counters["resets_refused"] == 50
        recv_until(ws, lambda m: is_type("state")(m) and m["resets"] >= 1)
        recv_until(ws, lambda m: is_type("state")(m) and any(t["who"] == "user" for t in m["transcript"]))
    assert web.counters["resets_refused"] >= 1  # fifty in a burst: the limit of 4 a second refused some


def test_settings_say_when_they_apply_and_a_long_summary_is_reported_clipped(web, spy):
    with connect(ws_url(web)) as ws:
        recv_until(ws, is_type("hello"))
        summary = "S1 and S2 are talking about the weather. " * 250
        ws.send(json.dumps({"type": "config", "changes": {"agent.summary": summary[:10_000], "agent.top_p": 0.5}}))
        reply = recv_until(ws, is_type("notice"))["message"]
        assert "applied now: top_p" in reply and "applied at the next reset: summary" in reply
        assert "summary cut from 10000 to" in reply
        (change,) = spy.wait(ConfigChange)
        assert change.changes == {"agent.summary": summary[:10_000], "agent.top_p": 0.5}
        recv_until(ws, lambda m: is_type("state")(m) and any("summary cut" in n for n in m["notes"]))
        ws.send(json.dumps({"type": "config", "changes": {"agent.top_p": 5}}))
        assert "refused" in recv_until(ws, is_type("notice"))["message"]
        ws.send(json.dumps({"type": "config", "changes": {"bus.hwm": 1}}))
        assert "cannot change bus.hwm" in recv_until(ws, is_type("notice"))["message"]
        ws.send(json.dumps({"type": "config", "changes": {"agent.top_p": 0.5}}))  # unchanged: nothing published
        assert recv_until(ws, is_type("notice"))["message"] == "nothing changed"
        ws.send(json.dumps({"type": "text", "text": "published after the settings"}))
        assert spy.until(ConfigChange, lambda ev: isinstance(ev, UserText)) == []


def test_the_bridge_keeps_going_when_the_bus_proxy_restarts(bus_cfg):
    from conftest import ProxyThread

    proxy = ProxyThread(bus_cfg)
    web = WebApp(Config(bus=bus_cfg, run=RunConfig(id="t"), ui=UiConfig(port=free_port())), Clock(), say=lambda line: None)
    web.start()
    try:
        with connect(ws_url(web)) as ws:
            recv_until(ws, is_type("hello"))
            proxy.stop()  # the bus goes away under the bridge, and comes back on the same endpoints
            time.sleep(0.3)
            ws.send(json.dumps({"type": "text", "text": "meanwhile"}))  # published with no bus: queued or dropped
            proxy = ProxyThread(bus_cfg)
            spy = Spy(bus_cfg)
            try:
                got, deadline = [], time.monotonic() + 10
                while not got and time.monotonic() < deadline:  # until the bridge has reconnected
                    ws.send(json.dumps({"type": "text", "text": "back again"}))
                    got = spy.wait(UserText, timeout_s=0.5, keep=lambda ev: ev.text == "back again")
                assert got
                back, deadline = None, time.monotonic() + 10
                while back is None and time.monotonic() < deadline:  # the way back to the page (its own reconnect)
                    spy.client.publish(AgentCancel(turn=1, gen=5))
                    try:
                        back = recv_until(ws, is_type("cancel"), timeout_s=0.5)
                    except (AssertionError, TimeoutError):
                        pass
                assert back is not None and back["gen"] == 5
            finally:
                spy.client.close()
        assert web.bridge.thread.is_alive()
    finally:
        web.close()
        proxy.stop()


def test_login_settings():
    assert parse_auth("") is None
    assert parse_auth("ann:secret") == [("ann", "secret")]
    with pytest.raises(ValueError, match="ui.auth"):
        parse_auth("/no/such/file")


def test_the_launcher_gives_the_page_the_audio_and_warns_about_open_hosts(tmp_path, capsys):
    from rtchat.configs import load
    from rtchat.launcher import frontend_factory, prepare_run

    cfg = load("cpu", [f"run.runs_dir={tmp_path}", "launcher.ui=gradio", "ui.host=0.0.0.0"])
    cfg, _, _ = prepare_run(cfg)
    assert (cfg.audio.input, cfg.audio.output) == ("browser", "browser")
    assert "can be reached from the network" in capsys.readouterr().err
    factory = frontend_factory(cfg)
    assert factory.func.__name__ == "WebFrontend" and "" in factory.keywords["voices"]  # the TTS package lists them
    cfg = load("cpu", [f"run.runs_dir={tmp_path}", "launcher.ui=gradio", "audio.output=none"])
    cfg, _, _ = prepare_run(cfg)
    assert (cfg.audio.input, cfg.audio.output) == ("browser", "none")
    assert "reached from the network" not in capsys.readouterr().err
    assert dataclasses.asdict(cfg.ui)["host"] == "127.0.0.1"


def test_with_a_login_a_page_that_did_not_log_in_gets_no_token(real_bus):
    import httpx

    cfg = Config(bus=real_bus, run=RunConfig(id="t"), ui=UiConfig(port=free_port(), auth="ann:secret"))
    web = WebApp(cfg, Clock(), say=lambda line: None)
    web.start()
    try:
        base = f"http://127.0.0.1:{cfg.ui.port}"
        for path in ("/", "/config", "/gradio_api/info"):
            r = httpx.get(base + path)
            assert web.token not in r.text, path
        assert httpx.get(base + "/config").status_code in (401, 403)
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            with connect(ws_url(web, token="guess")) as ws:
                ws.recv(timeout=5)
        r = httpx.post(base + "/login", data={"username": "ann", "password": "secret"})
        assert r.status_code == 200 and r.cookies  # the right login is let in
    finally:
        web.close()


def test_a_taken_port_is_a_clear_error(real_bus):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = Config(bus=real_bus, run=RunConfig(id="t"), ui=UiConfig(port=taken.getsockname()[1]))
        web = WebApp(cfg, Clock(), say=lambda line: None)
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"port {port} on 127.0.0.1 is already in use .* ui.port=N"):
            web.start()
        web.close()
