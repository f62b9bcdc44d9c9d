"""The page's state, folded from bus events on virtual time."""

from __future__ import annotations

from rtchat.bus.events import (
    AgentCancel,
    AgentPause,
    AgentRelease,
    AgentSay,
    AgentState,
    AsrFinal,
    AsrPartial,
    AudioPlayed,
    NodeHeartbeat,
    NodeRestarted,
    Reset,
    TtsAudio,
    UserText,
    VadEnd,
    VadStart,
)
from rtchat.ui.web.bridge import MicStream
from rtchat.ui.web.state import PageState

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S


def played(start, end, text="hi", chunk=0):
    return AudioPlayed(turn=1, gen=0, chunk=chunk, text=text, start_ns=start, end_ns=end, stream_pos=0, n_samples=1,
                       sr_hz=16000)


def test_partial_words_stay_apart_from_committed_ones_until_the_final():
    st = PageState()
    st.on_event(AsrPartial(text="hello the", rev=1, utterance=0), T0)
    st.on_event(AsrPartial(text="hello there how", rev=2, utterance=0), T0 + 100 * MS)
    assert st.transcript_text() == [("user", "", "hello there how")]
    st.on_event(AsrFinal(text="Hello there, how are you?", utterance=0), T0 + 200 * MS)
    assert st.transcript_text() == [("user", "Hello there, how are you?", "")]
    st.on_event(AsrPartial(text="and", rev=1, utterance=1), T0 + 300 * MS)
    assert st.transcript_text() == [("user", "Hello there, how are you?", "and")]
    snap = st.snapshot(T0 + 300 * MS)
    assert snap["transcript"][0]["partial"] == "and" and snap["transcript"][0]["parts"] == [{"w": "Hello there, how are you?"}]


def test_agent_words_pauses_and_cuts_make_its_turn():
    st = PageState()
    st.on_event(UserText(text="hi"), T0)
    st.on_event(AgentSay(turn=1, gen=0, text=" oh hello (0.5) there", chunk=0), T0 + S)
    st.on_event(AgentPause(turn=1, gen=0, duration_ns=800 * MS), T0 + 2 * S)
    st.on_event(AgentPause(turn=1, gen=0, duration_ns=800 * MS), T0 + 3 * S)  # one growing pause
    st.on_event(AgentRelease(turn=1, gen=0, n_chunks=1, text=" so", chunk=1), T0 + 4 * S)
    st.on_event(AgentCancel(turn=1, gen=1), T0 + 5 * S)
    assert st.transcript_text() == [("user", "hi", ""), ("agent", "oh hello (0.5) there (1.6) so —", "")]


def test_floor_and_who_is_audible():
    st = PageState()
    st.on_event(AgentState(turn=1, gen=0, sequence="S1: hi S2:", floor="agent"), T0)
    st.on_event(VadStart(stream_pos=0, audio_ns=0, at_ns=T0), T0)
    st.on_event(TtsAudio(turn=1, gen=0, chunk=0, text="hi", pcm=b"\0\0" * 16000, sr_hz=16000, n_samples=16000, last=True), T0)
    snap = st.snapshot(T0 + 500 * MS)
    assert snap["floor"] == "agent" and snap["speaking"] == {"user": True, "agent": True}
    assert st.snapshot(T0 + 1500 * MS)["speaking"]["agent"] is False
    st.on_event(AgentCancel(turn=1, gen=1), T0 + 600 * MS)
    assert st.snapshot(T0 + 700 * MS)["speaking"]["agent"] is False


def test_timeline_keeps_the_last_minute_relative_to_now():
    st = PageState(window_ns=60 * S)
    st.on_event(VadStart(stream_pos=0, audio_ns=0, at_ns=T0), T0)
    st.on_event(VadEnd(stream_pos=0, audio_ns=0, at_ns=T0 + 2 * S), T0 + 2 * S)
    st.on_event(played(T0 + 3 * S, T0 + 4 * S), T0 + 4 * S)
    st.on_event(VadStart(stream_pos=0, audio_ns=0, at_ns=T0 + 10 * S), T0 + 10 * S)
    spans = st.snapshot(T0 + 12 * S)["timeline"]["spans"]
    assert [(s["who"], s["from_ms"], s["to_ms"]) for s in spans] == [
        ("user", 12000, 10000), ("agent", 9000, 8000), ("user", 2000, 0)]
    spans = st.snapshot(T0 + 63 * S)["timeline"]["spans"]  # the first user span is older than a minute
    assert [s["who"] for s in spans] == ["agent", "user"]


def test_latencies_are_medians_of_each_stage():
    st = PageState()
    for i, (asr, agent, tts, resp) in enumerate([(300, 200, 100, 900), (500, 400, 300, 1100), (400, 300, 200, 1000)]):
        t = T0 + i * 10 * S
        st.on_event(VadEnd(stream_pos=0, audio_ns=0, at_ns=t), t)
        st.on_event(AsrFinal(text="hi", utterance=i), t + asr * MS)
        st.on_event(AgentSay(turn=i, gen=0, text=" yes", chunk=0), t + (asr + agent) * MS)
        st.on_event(TtsAudio(turn=i, gen=0, chunk=0, text="yes", pcm=b"\0\0", sr_hz=16000, n_samples=1, last=True),
                    t + (asr + agent + tts) * MS)
        st.on_event(played(t + resp * MS, t + (resp + 500) * MS), t + 3 * S)
    assert st.latencies() == {"asr": 400, "agent": 300, "tts": 200, "response": 1000}
    t = T0 + 100 * S  # the recogniser says when the last word ended: that is where its latency starts
    st.on_event(AsrFinal(text="hi", utterance=9, spoken_until_ns=t), t + 1000 * MS)
    st.on_event(AsrFinal(text="hi", utterance=10, spoken_until_ns=t), t + 1000 * MS)
    assert st.latencies()["asr"] == 500  # median of 300, 400, 500, 1000, 1000


def test_node_health_from_heartbeats_and_restarts():
    st = PageState(stale_ns=3 * S)
    st.on_event(NodeHeartbeat(node="asr", pid=10, uptime_ns=5 * S, stats={}), T0)
    assert st.snapshot(T0 + S)["nodes"]["asr"]["status"] == "ok"
    assert st.snapshot(T0 + 4 * S)["nodes"]["asr"]["status"] == "silent"
    st.on_event(NodeRestarted(node="asr", reason="missed 3 heartbeats", attempt=1, backoff_ns=0, pid=11), T0 + 4 * S)
    node = st.snapshot(T0 + 4 * S)["nodes"]["asr"]
    assert node["status"] == "restarting" and node["restarts"] == 1 and node["reason"] == "missed 3 heartbeats"
    st.on_event(NodeHeartbeat(node="asr", pid=11, uptime_ns=S, stats={}), T0 + 6 * S)
    assert st.snapshot(T0 + 6 * S)["nodes"]["asr"] == {"status": "ok", "restarts": 1, "reason": "missed 3 heartbeats",
                                                       "uptime_s": 1.0}


def test_reset_clears_the_conversation_but_not_the_view_of_the_system():
    st = PageState()
    st.on_event(UserText(text="hi"), T0)
    st.on_event(AgentSay(turn=1, gen=0, text=" hello", chunk=0), T0 + S)
    st.on_event(AgentState(turn=1, gen=0, sequence="", floor="agent"), T0 + S)
    st.on_event(NodeHeartbeat(node="tts", pid=1, uptime_ns=S, stats={}), T0 + S)
    v = st.version
    st.on_event(Reset(reason="web page"), T0 + 2 * S)
    snap = st.snapshot(T0 + 2 * S)
    assert snap["transcript"] == [] and snap["floor"] == "none" and snap["resets"] == 1
    assert "tts" in snap["nodes"] and snap["timeline"]["spans"]  # the typed word stays on the timeline
    assert st.version > v


def test_mic_stream_positions_follow_rate_and_gaps():
    mic = MicStream()
    f = mic.frame(b"\1\0" * 960, 48000, T0 + 20 * MS)
    assert (f.stream_pos, f.n_samples, f.sr_hz, f.t_capture_ns) == (0, 960, 48000, T0)
    f = mic.frame(b"\1\0" * 960, 48000, T0 + 40 * MS)
    assert f.stream_pos == 960
    f = mic.frame(b"\1\0" * 882, 44100, T0 + 60 * MS)  # the rate changed: the position is rescaled
    assert (f.stream_pos, f.sr_hz) == (1920 * 44100 // 48000, 44100)
    f = mic.frame(b"\1\0" * 882, 44100, T0 + 2080 * MS)  # 2 s without frames: the position jumps by the silence
    assert f.stream_pos == 1764 + 882 + 2 * 44100
    odd = mic.frame(b"\1\0\1", 16000, T0 + 3 * S)  # an odd byte is dropped
    assert odd.n_samples == 1 and len(odd.pcm) == 2
