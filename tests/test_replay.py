"""Replay: pacing on virtual time, topic selection, damaged logs, and a real bus."""

from __future__ import annotations

import zmq

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock, FakeClock, ms
from rtchat.bus.eventlog import LogReader, LogWriter
from rtchat.bus.events import AgentSay, Envelope, NodeHeartbeat, Shutdown, UserText
from rtchat.bus.replay import replay
from rtchat.bus.wire import encode

T0 = 1_700_000_000_000_000_000


def make_log(path, events_at: list[tuple[int, object]]) -> LogReader:
    w = LogWriter(path, {"run": "old"})
    for seq, (t, ev) in enumerate(events_at):
        w.append(T0 + t, encode(ev, Envelope(v=1, src="old", seq=seq, t_ns=T0 + t, session="old")))
    w.close()
    return LogReader(path)


SCRIPT = [
    (0, UserText(text="hello")),
    (ms(100), NodeHeartbeat(node="asr", pid=1, uptime_ns=1, stats={})),
    (ms(250), AgentSay(turn=1, gen=0, text="hi there")),
    (ms(1250), Shutdown(reason="old run ended")),
    (ms(1300), UserText(text="bye")),
]


def run(tmp_path, speed, topics=()):
    clock = FakeClock(start_ns=5_000)
    sent = []
    result = replay(make_log(tmp_path / "e.rtlog", SCRIPT), lambda ev: sent.append((clock.now_ns(), ev)), clock, speed, topics)
    return result, sent


def test_replay_keeps_the_original_pace_and_leaves_out_control_events(tmp_path):
    result, sent = run(tmp_path, speed=1.0)
    assert [(t - 5_000, ev) for t, ev in sent] == [
        (0, UserText(text="hello")),
        (ms(250), AgentSay(turn=1, gen=0, text="hi there")),
        (ms(1300), UserText(text="bye")),
    ]
    assert (result.published, result.skipped) == (3, 2)


def test_replay_speed_scales_the_gaps(tmp_path):
    _, sent = run(tmp_path, speed=2.0)
    assert [t - 5_000 for t, _ in sent] == [0, ms(125), ms(650)]


def test_fast_replay_does_not_wait(tmp_path):
    _, sent = run(tmp_path, speed=None)
    assert [t for t, _ in sent] == [5_000, 5_000, 5_000]


def test_topics_select_by_prefix_and_timing_starts_at_the_first_selected(tmp_path):
    _, sent = run(tmp_path, speed=1.0, topics=("agent.", "ctl."))
    assert [(t - 5_000, type(ev).__name__) for t, ev in sent] == [(0, "AgentSay"), (ms(1000), "Shutdown")]


def test_damaged_log_replays_up_to_the_damage(tmp_path):
    path = tmp_path / "e.rtlog"
    make_log(path, SCRIPT)
    path.write_bytes(path.read_bytes()[:-5])
    reader = LogReader(path)
    sent = []
    replay(reader, sent.append, FakeClock(), None, ())
    assert [ev.text for ev in sent] == ["hello", "hi there"]
    assert reader.damage is not None


def test_replay_onto_a_live_bus_delivers_events_in_order(tmp_path, real_bus):
    clock = Clock()
    listener = BusClient(real_bus, src="listener", session="live", clock=clock, topics=("user.", "agent."))
    listener.handshake(int(5e9))
    player = BusClient(real_bus, src="replay", session="live", clock=clock)
    player.handshake(int(5e9))
    try:
        replay(make_log(tmp_path / "e.rtlog", SCRIPT), player.publish, clock, 20.0)
        got = []
        while len(got) < 3 and listener.data.poll(2000, zmq.POLLIN):
            msg = listener.decode(listener.data.recv_multipart())
            got.append((msg.env.src, msg.event))
        assert got == [
            ("replay", UserText(text="hello")),
            ("replay", AgentSay(turn=1, gen=0, text="hi there")),
            ("replay", UserText(text="bye")),
        ]
    finally:
        listener.close()
        player.close()


def test_replay_cli_reads_a_damaged_log_up_to_the_damage_and_says_where(tmp_path, real_bus):
    import subprocess
    import sys

    path = tmp_path / "e.rtlog"
    make_log(path, SCRIPT)
    path.write_bytes(path.read_bytes()[:-5])
    out = subprocess.run(
        [sys.executable, "-m", "rtchat.cli", "replay", str(path), "--fast",
         f"bus.pub_endpoint={real_bus.pub_endpoint}", f"bus.sub_endpoint={real_bus.sub_endpoint}"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "replayed 2 event(s)" in out.stdout
    assert "damaged: stopped at byte" in out.stderr


def test_replay_cli_without_a_bus_is_a_usage_error(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "e.rtlog"
    make_log(path, SCRIPT)
    out = subprocess.run([sys.executable, "-m", "rtchat.cli", "replay", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no live bus" in out.stderr
