"""What a page may send, checked without a server (ui/web/protocol.py), and who counts as the page
itself (ui/web/net.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from rtchat.configs.schema import Config
from rtchat.ui.web.net import foreign, foreign_host, foreign_origin, listen_socket
from rtchat.ui.web.protocol import BadMessage, check_changes, parse_mic, parse_text


def mic(sr: int, n_bytes: int, magic: bytes = b"RTM1") -> bytes:
    return magic + struct.pack("<I", sr) + b"\1" * n_bytes


@pytest.mark.parametrize("raw, says", [
    ('{"type": "text", "text": "hi"', "not JSON"),
    ("RTM1\u0080\u00bb", "not JSON"),
    ("", "not JSON"),
    ("[1, 2]", "expected a JSON object with a string type, got list"),
    ('"text"', "got str"),
    ("null", "got NoneType"),
    ('{"text": "hi"}', "string type"),
    ('{"type": 5}', "string type, got dict"),
    ('{"type": "dance"}', "unknown message type 'dance'; allowed: text, reset, config"),
    ('{"type": "played"}', "unknown message type 'played'"),
    ('{"type": "text", "text": 5}', "needs text: a string, got int 5"),
    ('{"type": "text", "text": {"a": 1}}', "needs text: a string, got dict"),
    ('{"type": "text"}', "needs text: a string, got NoneType"),
    ('{"type": "text", "text": "hi", "extra": 1}', "a text message has no 'extra'; allowed: type, text"),
    ('{"type": "reset", "why": "x"}', "a reset message has no 'why'"),
    ('{"type": "config", "changes": [1]}', "needs changes: an object, got list"),
    ('{"type": "config", "changes": {"agent.top_p": NaN}}', "NaN is not a number the page sends"),
    ('{"type": "config", "changes": {"agent.top_p": -Infinity}}', "-Infinity is not a number"),
    ('{"type": "config", "changes": {"agent.top_p": 1e999}}', "1e999 is out of range"),
    ('{"type": "text", "text": "' + "9" * 10 + '", "n": ' + "9" * 5000 + "}", "not JSON"),
    ('{"type": "text", "text": "\\ud800"}', "lone surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
])
def test_a_text_frame_of_the_wrong_shape_is_refused_saying_why(raw, says):
    with pytest.raises(BadMessage) as info:
        parse_text(raw)
    assert says in str(info.value)


def test_well_formed_text_frames_pass():
    assert parse_text('{"type": "text", "text": "hello"}') == {"type": "text", "text": "hello"}
    assert parse_text('{"type": "reset"}') == {"type": "reset"}
    assert parse_text('{"type": "config", "changes": {"agent.top_p": 0.5}}')["changes"] == {"agent.top_p": 0.5}


@pytest.mark.parametrize("data, says", [
    (b"", "of 0 bytes"),
    (b"RTM", "of 3 bytes: it needs an 8-byte header"),
    (b"RTM1\x80\xbb", "of 6 bytes"),  # the header cut off
    (mic(48000, 0), "of 8 bytes"),  # a header and no samples
    (mic(48000, 961), "of 961 PCM bytes: int16 samples come in whole pairs"),
    (mic(48000, 1920, magic=b"RTA1"), "starting b'RTA1'"),
    (b'{"type": "text", "text": "hi"}', "starting b'{\"ty'"),  # text sent as binary
    (mic(0, 2), "at 0 Hz; allowed: 8000"),
    (mic(2**32 - 1, 2), "at 4294967295 Hz"),
    (mic(96000, 1920), "at 96000 Hz"),
    (mic(48000, 2 * 4801), "of 4801 samples at 48000 Hz; at most 100 ms"),
])
def test_a_binary_frame_that_is_not_a_microphone_frame_is_refused(data, says):
    with pytest.raises(BadMessage) as info:
        parse_mic(data)
    assert says in str(info.value)


def test_microphone_frames_pass_with_their_rate():
    assert parse_mic(mic(44100, 2 * 882)) == (b"\1" * 1764, 44100)
    assert parse_mic(mic(48000, 2 * 4800))[1] == 48000  # 100 ms: the longest allowed


def test_settings_are_typed_and_checked_as_the_config_loader_does():
    cfg = Config()
    assert check_changes(cfg, {"agent.top_p": 1, "tts.voice": "amy"}) == {"agent.top_p": 1.0, "tts.voice": "amy"}
    for changes, says in [
        ({"agent.top_p": "0.5"}, "agent.top_p: expected a finite number, got str"),
        ({"agent.top_p": 5}, "agent.top_p"),
        ({"agent.user_name": {"a": 1}}, "agent.user_name: expected a string, got dict"),
        ({"agent.agent_starts": 1}, "agent.agent_starts: expected true or false"),
        ({"agent.interval_s": True}, "agent.interval_s: expected a finite number, got bool"),
        ({"agent.decoding": "beam"}, "agent.decoding: got str 'beam'; allowed: 'greedy'"),
        ({"tts.voice": 3}, "tts.voice: expected a string"),
        ({"bus.hwm": 1}, "cannot change bus.hwm from the page"),
    ]:
        with pytest.raises(ValueError) as info:
            check_changes(cfg, changes)
        assert says in str(info.value)


def test_the_page_itself_and_scripts_pass_other_sites_and_rebound_names_do_not():
    page = {"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"}
    assert foreign(page, "127.0.0.1") is None
    assert foreign({"host": "127.0.0.1:7860"}, "127.0.0.1") is None  # curl, a script: no Origin
    assert foreign({"host": "localhost:7860", "origin": "http://localhost:7860"}, "127.0.0.1") is None
    assert foreign({"host": "[::1]:7860", "origin": "http://[::1]:7860"}, "::1") is None
    assert "another site" in foreign_origin({"host": "127.0.0.1:7860", "origin": "http://evil.example"})
    assert "another site" in foreign_origin({"host": "127.0.0.1:7860", "origin": "null"})  # a sandboxed frame, file://
    assert "another site" in foreign_origin({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7861"})
    # DNS rebinding: evil.example resolves to 127.0.0.1, so its page is same-origin with itself
    rebound = {"host": "evil.example:7860", "origin": "http://evil.example:7860"}
    assert "not a loopback name" in foreign_host(rebound, "127.0.0.1")
    assert foreign(rebound, "0.0.0.0") is None  # open to the network: the machine's names are not known


def test_a_taken_port_names_the_port_and_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"^port {port} on 127.0.0.1 is already in use .*ui\.port=N"):
            listen_socket("127.0.0.1", port)
