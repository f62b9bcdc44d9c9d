"""The audio node's pure core: user audio in, agent audio out, the session recording, on virtual time.

Consumes: ``tts.audio`` (pieces of agent chunks, any rate), ``agent.cancel`` (barge-in: drop
older generations), ``ctl.reset`` (drop all agent audio), ``ctl.live`` (every node is ready: a
WAV input starts playing), and ``audio.in`` only when
``audio.input=browser`` (frames from the web page, recorded).
Produces: ``audio.in`` (user frames of ``frame_ms`` at ``sr_hz``), ``audio.eof`` (the WAV ended,
the microphone was lost), ``audio.played`` (one per agent chunk, once it ended or was cut).

One timeline. The origin ``t0_ns`` is the core's first call (the node's first tick, right after
``node.ready``). Output sample ``j`` plays at ``t0 + j / sr_hz``; a WAV's input sample ``i`` is
captured at ``t0 + (w + i) / sr_hz``, where ``w`` is the playhead when ``ctl.live`` came (the WAV
waits for the whole session: frames sent before the recogniser and the agent are up would be
lost); and sample ``i`` of ``session.wav`` is the instant
``t0 + i / sr_hz`` on both channels. A microphone's or the page's frames are placed by their
``t_capture_ns``: the first frame fixes the offset between its ``stream_pos`` and the timeline,
later frames follow by ``stream_pos`` so the recording does not jitter with callback times.

Input: a WAV is paced in real time, as a microphone would deliver it (and after its end, with
``audio.pad_after_eof``, silence frames follow, as a microphone's would, so the recogniser hears
the user stop; ``audio.eof`` still marks the file's end): frame k goes out once it
has been "captured", when ``now >= t0 + (k + 1) * frame`` (its ``t_capture_ns`` is
``t0 + k * frame``, its first sample), so no audio.in arrives before the audio it carries ends
and ``audio.eof`` comes when the file's last sample has played; or, with
``realtime=false``, in batches of ``FAST_BATCH_FRAMES`` per tick, then ``audio.eof``. A
microphone (``devices.MicSource``) fills a thread-safe queue that each tick drains.

Output: pieces are scheduled back to back — a piece starts at max(now, end of the queue) — and
the playhead is ``now`` on the timeline; a chunk's ``audio.played`` goes out once its last piece
is in and the playhead passed its last sample. A speaker sink (``devices.SpeakerSink``) gets
each piece's samples as they are scheduled and plays them from a FIFO (silence when empty);
with no sink the same timeline runs virtually. ``agent.cancel(gen=g)`` cuts the chunk playing
now at the playhead (its ``audio.played`` says what really played), drops every queued piece of
a generation < g and ignores such pieces arriving later; pieces of newer generations move up.
Agent audio is recorded as the playhead passes it, so cut audio never reaches the recording.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import soxr

from rtchat.bus.events import AgentCancel, AudioEof, AudioIn, AudioPlayed, Event, Live, Reset, TtsAudio
from rtchat.bus.node import Core
from rtchat.configs.schema import AudioConfig
from rtchat.nodes.audio.wavio import SessionRecorder, resample, to_int16

log = logging.getLogger(__name__)

NS = 1_000_000_000
FAST_BATCH_FRAMES = 50  # realtime=false: WAV frames per tick (1 s of 20 ms frames), then the bus is read
FAST_TICK_NS = 1_000_000  # realtime=false: the pause between batches, so control events get in
FLUSH_NS = NS  # the recording is flushed this often
RECORD_MARGIN_NS = NS // 2  # samples this far behind now are final in the recording (late frames dropped)
ENGINE_RATES = (8000, 192_000)  # accepted tts.audio sample rates, inclusive


class InputSource(Protocol):
    """A live input (the microphone): blocks of mono int16 at the core's rate."""

    def read(self) -> list[tuple[np.ndarray, int]]:
        """Blocks captured since the last call, each with the capture time of its first sample."""
        ...

    def lost(self) -> str | None:
        """Why the device stopped delivering, or None while it works."""
        ...

    def close(self) -> None: ...


class OutputSink(Protocol):
    """A live output (the speaker): plays what it is given back to back, silence when empty."""

    def write(self, samples: np.ndarray) -> None: ...

    def clear(self) -> None:
        """Drop everything not yet played."""
        ...

    def lost(self) -> str | None: ...

    def underruns(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class Piece:
    """One tts.audio piece at the output rate, placed on the output timeline."""

    key: tuple[int, int, int]  # (turn, gen, chunk)
    text: str
    samples: np.ndarray  # int16
    start: int  # output sample index of its first sample

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


@dataclass
class Chunk:
    """One agent chunk: where its audio sits and what it carries."""

    turn: int
    gen: int
    chunk: int
    start: int | None = None  # output sample index of its first piece's first sample
    end: int = 0  # one past its last scheduled sample
    last: bool = False  # its final piece is in
    pieces: list[Piece] = field(default_factory=list)
    resampler: tuple[int, soxr.ResampleStream] | None = None  # (engine rate, stream)


def join_text(parts: list[str]) -> str:
    """Piece texts → the chunk's text: kept as given, with a space where two words would touch."""
    out = ""
    for part in parts:
        if out and part and not out[-1].isspace() and not part[0].isspace():
            out += " "
        out += part
    return out


class AudioCore(Core):
    name = "audio"
    topics = ("tts.audio", "agent.cancel")

    def __init__(
        self,
        cfg: AudioConfig,
        *,
        wav: np.ndarray | None = None,
        mic: InputSource | None = None,
        speaker: OutputSink | None = None,
        recorder: SessionRecorder | None = None,
    ):
        self.cfg = cfg
        self.sr = cfg.sr_hz
        self.frame_n = cfg.sr_hz * cfg.frame_ms // 1000  # samples per audio.in frame (320 at 16 kHz, 20 ms)
        self.wav, self.mic, self.speaker, self.recorder = wav, mic, speaker, recorder
        self.devices = [d for d in (mic, speaker) if d is not None]  # closed by close(), lost or not
        self.browser = cfg.input == "browser" and wav is None and mic is None
        if self.browser:
            self.topics = (*AudioCore.topics, "audio.in")
        self.t0: int | None = None
        self.now = 0  # the latest time the core was called at
        self.last_tick = 0
        self.next_flush = 0
        # input
        self.in_pos = 0  # samples of audio.in sent
        self.in_offset: int | None = None  # timeline index of WAV sample 0, fixed by ctl.live
        self.eof_sent = False
        self.in_done = wav is None and mic is None
        self.carry = np.zeros(0, dtype=np.int16)  # microphone samples not yet a whole frame
        self.carry_t = 0  # capture time of carry[0]
        self.rec_offset: int | None = None  # recording index - stream_pos, for mic / browser frames
        # output
        self.chunks: dict[tuple[int, int, int], Chunk] = {}
        self.queue: deque[Piece] = deque()  # scheduled pieces not yet fully played, in order
        self.queue_end = 0  # one past the last scheduled sample
        self.recorded_to = 0  # agent samples before this index are in the recording
        self.min_gen = 0  # tts.audio of a generation below this is stale
        self.counters = dict.fromkeys(
            ("frames_in", "frames_recorded", "bad_frames", "pieces_in", "pieces_dropped_stale", "bad_pieces", "chunks_played",
             "chunks_cut", "chunks_dropped", "underruns", "input_lost", "output_lost"), 0)

    # ------------------------------------------------------------ timeline

    def time_of(self, index: int) -> int:
        """When timeline sample ``index`` plays / was captured."""
        return self.t0 + index * NS // self.sr

    def playhead(self, now_ns: int) -> int:
        """Output samples that have started playing by ``now_ns`` (the index of the next one)."""
        return -(-(now_ns - self.t0) * self.sr // NS)

    def _start(self, now_ns: int) -> None:
        if self.t0 is None:
            self.t0 = self.last_tick = now_ns
            self.next_flush = now_ns + FLUSH_NS
        self.now = max(self.now, now_ns)

    # ------------------------------------------------------------ the Core interface

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        self._start(now_ns)
        out = self._advance(now_ns)
        if isinstance(ev, TtsAudio):
            self._piece(ev, now_ns)
        elif isinstance(ev, AgentCancel):
            out += self._drop(lambda c: c.gen < ev.gen, now_ns)
            self.min_gen = max(self.min_gen, ev.gen)
        elif isinstance(ev, Reset):
            out += self._drop(lambda c: True, now_ns)
        elif isinstance(ev, AudioIn) and self.browser:
            self._record_user(ev)
        elif isinstance(ev, Live) and self.in_offset is None:
            self.in_offset = self.playhead(now_ns)
        return out

    def on_tick(self, now_ns: int) -> list[Event]:
        self._start(now_ns)
        self.last_tick = now_ns
        out = self._input(now_ns)
        if self.speaker is not None and (reason := self.speaker.lost()):
            log.warning("output %s; playing on virtual time from now on", reason)
            self.counters["output_lost"] += 1
            self.speaker = None
        out += self._advance(now_ns)
        if now_ns >= self.next_flush:
            self.next_flush = now_ns + FLUSH_NS
            if self.recorder is not None:
                self.recorder.flush(self.playhead(now_ns - RECORD_MARGIN_NS))
        return out

    def deadline_ns(self) -> int | None:
        if self.t0 is None:
            return 0  # start at once: the first tick fixes the origin
        due = [self.next_flush]
        if not self.in_done:
            if self.mic is not None:
                due.append(self.last_tick + self.cfg.frame_ms * 1_000_000)
            elif self.in_offset is None:
                pass  # the WAV waits for ctl.live
            elif self.cfg.realtime:
                due.append(self.time_of(self._frame_end()))
            else:
                due.append(self.last_tick + FAST_TICK_NS)
        ends = [self.time_of(c.end) for c in self.chunks.values() if c.last and c.start is not None]
        return min(due + ends)

    def stats(self) -> dict[str, int | float]:
        queued = max(self.queue_end - (self.playhead(self.now) if self.t0 is not None else 0), 0)
        out = dict(self.counters) | {"queued_ms": queued * 1000 // self.sr, "in_pos": self.in_pos}
        if self.speaker is not None:
            out["device_underruns"] = self.speaker.underruns()
        if self.recorder is not None:
            out["rec_late_samples"] = self.recorder.late_samples
        return out

    def close(self) -> None:
        for device in self.devices:
            device.close()
        if self.recorder is not None:
            if self.t0 is not None:
                self._record_agent(self.playhead(self.now))
            self.recorder.close()

    # ------------------------------------------------------------ input

    def _input(self, now_ns: int) -> list[Event]:
        if self.in_done:
            return []
        if self.wav is not None:
            return self._wav_frames(now_ns)
        out = []
        for block, t_ns in self.mic.read():
            out += self._mic_block(block, t_ns)
        if reason := self.mic.lost():
            log.warning("input %s", reason)
            self.counters["input_lost"] += 1
            self.in_done = True
            out.append(AudioEof(stream_pos=self.in_pos, reason=reason))
        return out

    def _wav_frames(self, now_ns: int) -> list[Event]:
        if self.in_offset is None:
            return []
        out: list[Event] = []
        n, total = self.frame_n, len(self.wav)
        pad = self.cfg.pad_after_eof and self.cfg.realtime
        while (self.in_pos < total or pad) and (self.time_of(self._frame_end()) <= now_ns if self.cfg.realtime
                                                 else len(out) < FAST_BATCH_FRAMES):
            pcm = self.wav[self.in_pos : self.in_pos + n] if self.in_pos < total else np.zeros(n, np.int16)
            out.append(self._frame(pcm, self.time_of(self.in_offset + self.in_pos)))
            if self.recorder is not None and self.in_pos <= total:
                self.recorder.put(0, self.in_offset + self.in_pos - len(pcm), pcm)
            if self.in_pos >= total and not self.eof_sent:
                self.eof_sent = True
                out.append(AudioEof(stream_pos=self.in_pos, reason="end of file"))
        if self.in_pos >= total and not pad:
            self.in_done = True
            if not self.eof_sent:
                self.eof_sent = True
                out.append(AudioEof(stream_pos=self.in_pos, reason="end of file"))
        return out

    def _frame_end(self) -> int:
        """Timeline index one past the last sample of the next WAV frame (a silence frame after
        the file's end): it is captured by then."""
        left = len(self.wav) - self.in_pos
        return self.in_offset + self.in_pos + (min(self.frame_n, left) if left > 0 else self.frame_n)

    def _mic_block(self, block: np.ndarray, t_ns: int) -> list[Event]:
        if len(self.carry) == 0:
            self.carry_t = t_ns
        self.carry = np.concatenate([self.carry, block.astype(np.int16, copy=False)])
        out = []
        while len(self.carry) >= self.frame_n:
            pcm, self.carry = self.carry[: self.frame_n], self.carry[self.frame_n :]
            if self.rec_offset is None:
                self.rec_offset = self.playhead(self.carry_t) - self.in_pos
            if self.recorder is not None:
                self.recorder.put(0, self.in_pos + self.rec_offset, pcm)
            out.append(self._frame(pcm, self.carry_t))
            self.carry_t += self.frame_n * NS // self.sr
        return out

    def _frame(self, pcm: np.ndarray, t_capture_ns: int) -> AudioIn:
        ev = AudioIn(pcm=pcm.tobytes(), sr_hz=self.sr, n_samples=len(pcm), stream_pos=self.in_pos,
                     t_capture_ns=t_capture_ns)
        self.in_pos += len(pcm)
        self.counters["frames_in"] += 1
        return ev

    def _record_user(self, ev: AudioIn) -> None:
        """A frame from the web page: recorded at its place on the timeline (not republished)."""
        if ev.n_samples <= 0 or len(ev.pcm) % (2 * ev.n_samples) or not ENGINE_RATES[0] <= ev.sr_hz <= ENGINE_RATES[1]:
            self.counters["bad_frames"] += 1
            log.warning("audio.in frame dropped: %d bytes for %d samples at %d Hz", len(ev.pcm), ev.n_samples, ev.sr_hz)
            return
        x = np.frombuffer(ev.pcm, dtype=np.int16).reshape(ev.n_samples, -1).mean(axis=1).astype(np.float32) / 32768
        pos = ev.stream_pos * self.sr // ev.sr_hz
        if ev.sr_hz != self.sr:
            x = resample(x, ev.sr_hz, self.sr)
        if self.rec_offset is None:
            self.rec_offset = self.playhead(ev.t_capture_ns) - pos
        self.counters["frames_recorded"] += 1
        if self.recorder is not None:
            self.recorder.put(0, pos + self.rec_offset, to_int16(x))

    # ------------------------------------------------------------ output

    def _piece(self, ev: TtsAudio, now_ns: int) -> None:
        if ev.gen < self.min_gen:
            self.counters["pieces_dropped_stale"] += 1
            return
        if len(ev.pcm) != 2 * ev.n_samples or not ENGINE_RATES[0] <= ev.sr_hz <= ENGINE_RATES[1]:
            self.counters["bad_pieces"] += 1
            log.warning("tts.audio dropped: %d bytes for %d samples at %d Hz (allowed: mono int16, %d…%d Hz)",
                        len(ev.pcm), ev.n_samples, ev.sr_hz, *ENGINE_RATES)
            return
        x = np.frombuffer(ev.pcm, dtype=np.int16)
        self.counters["pieces_in"] += 1
        key = (ev.turn, ev.gen, ev.chunk)
        chunk = self.chunks.setdefault(key, Chunk(turn=ev.turn, gen=ev.gen, chunk=ev.chunk))
        samples = self._to_output_rate(chunk, x, ev.sr_hz, ev.last)
        start = max(self.playhead(now_ns), self.queue_end)
        if chunk.start is None:
            chunk.start = start
        elif start > chunk.end:
            self.counters["underruns"] += 1  # the chunk's next piece came after its audio ran out
        piece = Piece(key=key, text=ev.text, samples=samples, start=start)
        chunk.pieces.append(piece)
        chunk.end, chunk.last = piece.end, chunk.last or ev.last
        self.queue.append(piece)
        self.queue_end = piece.end
        if self.speaker is not None:
            self.speaker.write(samples)

    def _to_output_rate(self, chunk: Chunk, x: np.ndarray, rate: int, last: bool) -> np.ndarray:
        """One stream per chunk, so piece boundaries stay seamless and the length comes out exact."""
        if rate == self.sr:
            return x.copy()
        if chunk.resampler is None or chunk.resampler[0] != rate:
            chunk.resampler = (rate, soxr.ResampleStream(rate, self.sr, 1, dtype="float32", quality="HQ"))
        y = chunk.resampler[1].resample_chunk(x.astype(np.float32) / 32768, last=last)
        return to_int16(y)

    def _advance(self, now_ns: int) -> list[Event]:
        """Record what the playhead passed and report the chunks that finished."""
        head = self.playhead(now_ns)
        self._record_agent(head)
        while self.queue and self.queue[0].end <= head:
            self.queue.popleft()
        out = []
        for key, c in list(self.chunks.items()):
            if c.last and c.start is not None and c.end <= head:
                out.append(self._played(c, c.end))
                self.counters["chunks_played"] += 1
                del self.chunks[key]
        return out

    def _record_agent(self, head: int) -> None:
        if self.recorder is None or head <= self.recorded_to:
            return
        for p in self.queue:
            lo, hi = max(p.start, self.recorded_to), min(p.end, head)
            if lo < hi:
                self.recorder.put(1, lo, p.samples[lo - p.start : hi - p.start])
        self.recorded_to = head

    def _played(self, c: Chunk, upto: int) -> AudioPlayed:
        """The chunk's audio.played for what played before sample ``upto`` (its end unless cut)."""
        heard = c.pieces if upto >= c.end else [p for p in c.pieces if p.start < upto]
        n = sum(max(min(p.end, upto) - p.start, 0) for p in heard)
        return AudioPlayed(turn=c.turn, gen=c.gen, chunk=c.chunk, text=join_text([p.text for p in heard]),
                           start_ns=self.time_of(c.start), end_ns=self.time_of(min(c.end, upto)),
                           stream_pos=c.start, n_samples=n, sr_hz=self.sr)

    def _drop(self, stale, now_ns: int) -> list[Event]:
        """Cut the stale chunks at the playhead and move the pieces that stay up to close the gap."""
        head = self.playhead(now_ns)
        out = []
        for key, c in list(self.chunks.items()):
            if not stale(c):
                continue
            if c.start is not None and c.start < head:
                out.append(self._played(c, head))
                self.counters["chunks_cut"] += 1
            else:
                self.counters["chunks_dropped"] += 1
            self.counters["pieces_dropped_stale"] += sum(p.start >= head for p in c.pieces)
            del self.chunks[key]
        kept = [p for p in self.queue if p.key in self.chunks]
        if len(kept) == len(self.queue):
            return out
        self.queue = deque(kept)
        self.queue_end = head
        for p in self.queue:
            if p.start >= head:  # not yet started: move up, back to back
                p.start = self.queue_end
            self.queue_end = max(self.queue_end, p.end)
        for c in self.chunks.values():
            if c.pieces:
                c.start, c.end = c.pieces[0].start, c.pieces[-1].end
        if self.speaker is not None:
            self.speaker.clear()
            for p in self.queue:
                self.speaker.write(p.samples[max(head - p.start, 0) :])
        return out
