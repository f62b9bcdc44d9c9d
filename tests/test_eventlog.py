"""The event log: round trip, damage at any byte, reopening after a crash, gap detection."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtchat.bus.eventlog import MAGIC, LogError, LogReader, LogWriter, SeqTracker
from rtchat.bus.events import AudioIn, Envelope, UserText
from rtchat.bus.wire import decode, encode


def frames(i: int, src: str = "audio") -> list[bytes]:
    env = Envelope(v=1, src=src, seq=i, t_ns=1_000 + i, session="s")
    if i % 2:
        return encode(UserText(text=f"word {i}"), env)
    return encode(AudioIn(pcm=bytes([i % 256]) * 640, sr_hz=16000, n_samples=320, stream_pos=320 * i, t_capture_ns=i), env)


def write_log(path, n: int) -> None:
    w = LogWriter(path, {"run": "test"})
    for i in range(n):
        w.append(10_000 + i, frames(i))
    w.close()


def test_log_round_trips_frames_and_receive_times(tmp_path):
    path = tmp_path / "events.rtlog"
    write_log(path, 5)
    reader = LogReader(path)
    records = reader.read_all()
    assert [r.recv_ns for r in records] == [10_000 + i for i in range(5)]
    assert [r.frames for r in records] == [frames(i) for i in range(5)]
    assert reader.damage is None
    assert reader.metas == [{"run": "test"}]
    assert decode(records[1].frames).event == UserText(text="word 1")


def test_log_cut_at_any_byte_reads_up_to_last_whole_record(tmp_path):
    path = tmp_path / "events.rtlog"
    write_log(path, 4)
    data = path.read_bytes()
    ends = [r.offset for r in LogReader(path)] + [len(data)]  # record i ends where i+1 starts
    cut_path = tmp_path / "cut.rtlog"
    for cut in range(len(MAGIC), len(data)):
        cut_path.write_bytes(data[:cut])
        reader = LogReader(cut_path)
        got = reader.read_all()
        whole = sum(1 for e in ends[1:] if e <= cut)
        assert len(got) == whole, cut
        assert [r.frames for r in got] == [frames(i) for i in range(whole)]
        at_boundary = cut in ends or cut == reader.end_offset
        assert (reader.damage is None) == at_boundary, cut
        if reader.damage is not None:
            assert reader.damage.offset == reader.end_offset


def test_corrupted_byte_stops_reading_at_that_record(tmp_path):
    path = tmp_path / "events.rtlog"
    write_log(path, 4)
    offsets = [r.offset for r in LogReader(path)]
    data = bytearray(path.read_bytes())
    data[offsets[2] + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = LogReader(path)
    assert len(reader.read_all()) == 2
    assert reader.damage.offset == offsets[2]
    assert "CRC" in reader.damage.reason


def test_not_a_log_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "x.rtlog"
    path.write_bytes(b"hello world, not a log")
    with pytest.raises(LogError, match="not an rtchat event log"):
        LogReader(path).read_all()


def test_reopening_a_damaged_log_cuts_the_tail_and_appends(tmp_path):
    path = tmp_path / "events.rtlog"
    write_log(path, 3)
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # a crash mid-record
    w = LogWriter(path, {"run": "test", "reopened": True})
    assert w.truncated is not None
    w.append(99_999, frames(7))
    w.close()
    reader = LogReader(path)
    got = reader.read_all()
    assert reader.damage is None
    assert [r.recv_ns for r in got] == [10_000, 10_001, 99_999]
    assert len(reader.metas) == 2


def test_seq_tracker_reports_gaps_and_restarts():
    t = SeqTracker()
    for src, seq in [("a", 0), ("a", 1), ("a", 4), ("b", 10), ("a", 5), ("a", 0), ("a", 1)]:
        t.see(src, seq)
    assert (t.gaps, t.lost, t.restarts) == (1, 2, 1)
    assert t.details == [("a", 2, 2)]


def rtchat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtchat.cli", *args], capture_output=True, text=True, timeout=60)


def test_log_info_cli_reports_damage_and_lost_events(tmp_path):
    path = tmp_path / "events.rtlog"
    w = LogWriter(path, {"run": "r1"})
    for i in (0, 1, 2, 5, 6):  # seq 3 and 4 were lost
        w.append(10_000 + i, frames(i))
    w.close()
    path.write_bytes(path.read_bytes()[:-3])
    out = rtchat("log", "info", str(path), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["records"] == 4
    assert (info["gaps"], info["lost"]) == (1, 2)
    assert info["damage"]["offset"] > 0
    assert "damaged" in out.stderr and "stopped at byte" in out.stderr
    dump = rtchat("log", "dump", str(tmp_path), "--topics", "user.")
    assert dump.returncode == 0, dump.stderr
    lines = [json.loads(line) for line in dump.stdout.splitlines()]
    assert [d["text"] for d in lines] == ["word 1", "word 5"]


def test_log_info_cli_on_missing_file_exits_2(tmp_path):
    out = rtchat("log", "info", str(tmp_path / "nope.rtlog"))
    assert out.returncode == 2
    assert "no event log" in out.stderr and "Traceback" not in out.stderr


def test_read_since_returns_the_records_of_the_last_seconds_of_a_long_log(tmp_path, monkeypatch):
    import rtchat.bus.eventlog as eventlog

    monkeypatch.setattr(eventlog, "TAIL_WINDOW_BYTES", 4096)  # many windows, each starting mid-record
    path = tmp_path / "events.rtlog"
    w = LogWriter(path, {"run": "x"})
    for i in range(3000):  # audio frames and texts; every window starts mid-record
        w.append(1_000 + i, frames(i))
    w.close()
    got = eventlog.read_since(path, 1_000 + 2_990)
    assert [r.recv_ns for r in got] == list(range(3_990, 4_000))
    assert [decode(r.frames).env.seq for r in got] == list(range(2990, 3000))
    everything = [r.offset for r in LogReader(path)]
    assert [r.offset for r in got] == everything[-10:]


def test_read_since_reaches_back_to_the_start_and_skips_a_cut_tail(tmp_path):
    from rtchat.bus.eventlog import read_since

    path = tmp_path / "events.rtlog"
    write_log(path, 20)
    with open(path, "ab") as f:
        f.write(b"\x40\x00\x00\x00junk")  # the logger was killed mid-record
    assert [r.recv_ns for r in read_since(path, 0)] == [r.recv_ns for r in LogReader(path)]
    assert len(read_since(path, 0)) == 20
    assert read_since(path, 10**19) == []


class FillingFile:
    """A file on a disk with ``room`` bytes left: writes are partial, then ENOSPC."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        import errno

        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.f.write(data[: self.room])
        self.room -= n
        return n

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_full_disk_leaves_the_log_at_its_last_whole_record(tmp_path):
    path = tmp_path / "events.rtlog"
    w = LogWriter(path, {"run": "test"})
    for i in range(3):
        w.append(10_000 + i, frames(i))
    w.flush()
    w.f = FillingFile(w.f, room=1500)  # room for about one more audio record and a half
    for i in range(3, 10):
        w.append(10_000 + i, frames(i))
    with pytest.raises(OSError, match="No space left"):
        w.flush()
    w.close()
    reader = LogReader(path)
    records = reader.read_all()
    assert reader.damage is None  # no half record at the end
    assert [r.frames for r in records] == [frames(i) for i in range(len(records))]
    assert 3 < len(records) < 10  # what reached the disk whole is kept
