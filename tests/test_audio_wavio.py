"""Reading the user's WAV files (any depth, rate, channel count) and writing session.wav."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rtchat.nodes.audio.wavio import SessionRecorder, WavError, read_wav

SR = 16_000


def tone(sr_hz: int, seconds: float, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr_hz * seconds)) / sr_hz
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.argmax(spectrum) * sr_hz / len(x))


@pytest.mark.parametrize(
    "subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
)
def test_every_sample_format_reads_as_the_same_int16_tone(tmp_path, subtype):
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, tone(SR, 0.5), SR, subtype=subtype)
    x = read_wav(path, SR)
    assert x.dtype == np.int16 and len(x) == SR // 2
    tolerance = 300 if subtype == "PCM_U8" else 2  # 8 bits: 1/256 of full scale per step
    assert np.abs(x.astype(np.int32) - (tone(SR, 0.5) * 32767).round()).max() <= tolerance


def test_48_khz_is_resampled_keeping_duration_and_pitch(tmp_path):
    path = tmp_path / "48k.wav"
    sf.write(path, tone(48_000, 1.0, hz=1000), 48_000, subtype="PCM_16")
    x = read_wav(path, SR)
    assert len(x) == SR
    assert abs(peak_hz(x, SR) - 1000) <= 2


def test_8_khz_is_upsampled(tmp_path):
    path = tmp_path / "8k.wav"
    sf.write(path, tone(8000, 0.25, hz=300), 8000, subtype="PCM_16")
    x = read_wav(path, SR)
    assert len(x) == SR // 4 and abs(peak_hz(x, SR) - 300) <= 4


def test_six_channels_are_averaged_to_mono(tmp_path):
    path = tmp_path / "5.1.wav"
    channels = np.zeros((SR // 2, 6), dtype=np.float32)
    channels[:, 0] = tone(SR, 0.5, amp=0.6)  # only the front left speaks
    channels[:, 3] = 0.3  # a constant on another channel: shows up as an offset of 0.3 / 6
    sf.write(path, channels, SR, subtype="PCM_16")
    x = read_wav(path, SR).astype(np.float64) / 32767
    assert len(x) == SR // 2
    assert abs(x.mean() - 0.05) < 0.002
    assert abs((x - x.mean()).max() - 0.1) < 0.002


def test_a_file_that_is_not_a_wav_names_the_file_and_what_is_allowed(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(WavError, match=r"notes\.wav: not a readable audio file.*allowed: a WAV file"):
        read_wav(text, SR)
    flac = tmp_path / "speech.flac"
    sf.write(flac, tone(SR, 0.1), SR)
    with pytest.raises(WavError, match=r"speech\.flac: found FLAC.*not a WAV; allowed: a WAV file"):
        read_wav(flac, SR)


def test_an_empty_or_missing_file_is_refused_clearly(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(WavError, match=r"empty\.wav: the file is empty \(0 bytes\)"):
        read_wav(empty, SR)
    silent = tmp_path / "no-samples.wav"
    sf.write(silent, np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    with pytest.raises(WavError, match=r"no-samples\.wav: the WAV holds no samples"):
        read_wav(silent, SR)
    with pytest.raises(WavError, match=r"nowhere\.wav: no such file"):
        read_wav(tmp_path / "nowhere.wav", SR)


def test_session_recorder_puts_user_left_and_agent_right_at_their_indices(tmp_path):
    rec = SessionRecorder(tmp_path / "session.wav", SR)
    rec.put(0, 100, np.full(50, 1000, dtype=np.int16))
    rec.put(1, 120, np.full(50, -2000, dtype=np.int16))
    rec.put(1, 160, np.full(20, -2000, dtype=np.int16))  # overlaps: mixed, so -4000 there
    rec.close()
    x, sr = sf.read(tmp_path / "session.wav", dtype="int16")
    assert sr == SR and x.shape == (180, 2)
    assert (x[:100] == 0).all() and (x[100:150, 0] == 1000).all() and (x[150:, 0] == 0).all()
    assert (x[:120, 1] == 0).all() and (x[120:160, 1] == -2000).all() and (x[160:170, 1] == -4000).all()
    assert (x[170:180, 1] == -2000).all()


def test_a_crash_after_a_flush_leaves_a_valid_wav_with_the_flushed_audio(tmp_path):
    path = tmp_path / "session.wav"
    rec = SessionRecorder(path, SR)
    assert sf.info(path).frames == 0  # valid from the start
    rec.put(0, 0, np.arange(SR, dtype=np.int16))
    rec.flush(upto=SR // 2)
    rec.put(1, SR // 2, np.full(10, 7, dtype=np.int16))
    # no close(): read the file as a crash would leave it
    x, _ = sf.read(path, dtype="int16")
    assert x.shape == (SR // 2, 2) and (x[:, 0] == np.arange(SR // 2)).all()
    rec.put(0, 10, np.ones(5, dtype=np.int16))  # before the flush point: final already, dropped
    assert rec.late_samples == 5
    rec.close()
    x, _ = sf.read(path, dtype="int16")
    assert len(x) == SR and (x[SR // 2 : SR // 2 + 10, 1] == 7).all()
    assert (x[:, 0] == np.arange(SR)).all()


def test_a_restarted_recorder_continues_the_file_on_the_same_sample_indices(tmp_path):
    path = tmp_path / "session.wav"
    killed = SessionRecorder(path, SR)
    killed.put(0, 0, np.arange(1, 1001, dtype=np.int16))
    killed.flush(upto=800)
    killed.put(1, 900, np.full(50, 5, dtype=np.int16))  # after the flush: lost with the process
    # SIGKILL: no close()
    rec = SessionRecorder(path, SR, resume=True)
    assert rec.written == 800
    rec.put(1, 2000, np.full(100, -3, dtype=np.int16))
    rec.close()
    x, sr = sf.read(path, dtype="int16")
    assert sr == SR and x.shape == (2100, 2)
    assert (x[:800, 0] == np.arange(1, 801)).all() and not x[800:, 0].any()
    assert not x[:2000, 1].any() and (x[2000:, 1] == -3).all()


def test_a_restarted_recorder_keeps_whole_samples_written_before_the_header_was_updated(tmp_path):
    path = tmp_path / "session.wav"
    rec = SessionRecorder(path, SR)
    rec.put(0, 0, np.full(100, 9, dtype=np.int16))
    rec.close()
    with open(path, "ab") as f:  # killed between appending data and patching the header: 30.5 samples more
        f.write(np.full((30, 2), 8, dtype="<i2").tobytes() + b"\x01\x00")
    rec = SessionRecorder(path, SR, resume=True)
    assert rec.written == 130
    rec.close()
    x, _ = sf.read(path, dtype="int16")
    assert x.shape == (130, 2) and (x[100:, 0] == 8).all()


def test_a_restarted_recorder_refuses_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "session.wav"
    sf.write(path, np.zeros((100, 2), dtype=np.int16), 48_000, subtype="PCM_16")
    with pytest.raises(WavError, match=r"session.wav: not a session recording at 16000 Hz .*move it away"):
        SessionRecorder(path, SR, resume=True)
    new = SessionRecorder(tmp_path / "new.wav", SR, resume=True)  # nothing to continue: a new file
    new.close()
    assert sf.info(tmp_path / "new.wav").frames == 0
