"""The audio node's pure core: user audio in, agent audio out, the session recording, on virtual time.

Consumes: ``tts.audio`` (pieces of agent chunks, any rate), ``agent.cancel`` (barge-in: drop
older generations), ``ctl.reset`` (drop all agent audio), ``ctl.live`` (every node is ready: a
WAV input starts playing), ``node.ready`` (of the tts: a restarted tts sends no more pieces of
the chunks it was streaming), and ``audio.in`` only when
``audio.input=browser`` (frames from the web page, recorded).
Produces: ``audio.in`` (user frames of ``frame_ms`` at ``sr_hz``), ``audio.eof`` (the WAV ended,
the microphone was lost), ``audio.played`` (one per agent chunk, once it ended or was cut).

One timeline. The origin ``t0_ns`` is the core's first call (the node's first tick, right after
``node.ready``). Output sample ``j`` plays at ``t0 + j / sr_hz``; the user stream's sample
``stream_pos = s`` is captured at ``t0 + (in_offset + s) / sr_hz``, where ``in_offset`` is the
playhead when ``ctl.live`` came for a WAV (the WAV waits for the whole session: frames sent
before the recogniser and the agent are up would be lost), and for a microphone where its first
frame's ``t_capture_ns`` falls (later frames follow by ``stream_pos`` so the recording does not
jitter with callback times); and sample ``i`` of ``session.wav`` is the instant ``t0 + i /
sr_hz`` on both channels. The page's frames are placed the same way, by their own stream.

A restarted node (``resume``: the state and the frames a killed process of the same session left,
``resume.py``) keeps all of this: the same ``t0`` and ``in_offset``, the stream going on at the
first ``stream_pos`` the bus did not get. The outage is silence: it is sent as whole frames of
zeros at once (a WAV at the first call, a microphone before its first block), so stream_pos and
the timeline stay one, and a WAV then goes on from its first sample not sent — the scripted user
waited and loses no word; a microphone's outage is lost. ``save_state`` gets a new
``AudioState`` whenever the origin, the stream's anchor or its end changes.

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
A chunk still open when the tts restarts (``node.ready`` from it) is closed as it stands.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import soxr

from rtchat.bus.core import Core
from rtchat.bus.events import AgentCancel, AudioEof, AudioIn, AudioPlayed, Event, Live, NodeReady, Reset, TtsAudio
from rtchat.configs.schema import AudioConfig
from rtchat.nodes.audio.resume import AudioState, Resume
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
    topics = ("tts.audio", "agent.cancel", "node.ready")

    def __init__(
        self,
        cfg: AudioConfig,
        *,
        wav: np.ndarray | None = None,
        mic: InputSource | None = None,
        speaker: OutputSink | None = None,
        recorder: SessionRecorder | None = None,
        resume: Resume | None = None,
        save_state: Callable[[AudioState], None] | None = None,
    ):
        self.cfg = cfg
        self.sr = cfg.sr_hz
        self.frame_n = cfg.sr_hz * cfg.frame_ms // 1000  # samples per audio.in frame (320 at 16 kHz, 20 ms)
        self.wav, self.mic, self.speaker, self.recorder = wav, mic, speaker, recorder
        self.devices = [d for d in (mic, speaker) if d is not None]  # closed by close(), lost or not
        self.browser = cfg.input == "browser" and wav is None and mic is None
        self.pad = cfg.pad_after_eof and cfg.realtime  # silence frames follow a WAV's end
        if self.browser:
            self.topics = (*AudioCore.topics, "audio.in")
        self.resume, self.save_state = resume, save_state
        self.started = False
        self.t0: int | None = resume.state.t0_ns if resume else None
        self.now = 0  # the latest time the core was called at
        self.last_tick = 0
        self.next_flush = 0
        # input: stream_pos + in_offset = timeline index, for the whole run (restarts included)
        state = resume.state if resume else AudioState(t0_ns=0)
        self.in_pos = resume.stream_pos if resume else 0  # samples of audio.in sent
        self.in_offset = state.stream_offset  # fixed by ctl.live (WAV) or the first frame (mic)
        self.anchored = False  # this process has started (or taken over) the user stream
        self.anchor_ns, self.anchor_pos = state.anchor_ns, state.anchor_pos
        self.wav_lag = state.wav_lag  # in_pos - WAV sample index: the silence put in for outages
        self.silence_until = 0  # frames before this stream_pos are the outage's silence
        self.eof_pos = state.eof_pos
        self.eof_sent = state.eof_pos is not None
        self.in_done = wav is None and mic is None
        self.carry = np.zeros(0, dtype=np.int16)  # microphone samples not yet a whole frame
        self.carry_t = 0  # capture time of carry[0]
        self.rec_offset: int | None = None  # recording index - stream_pos of the web page's frames
        # output
        self.chunks: dict[tuple[int, int, int], Chunk] = {}
        self.queue: deque[Piece] = deque()  # scheduled pieces not yet fully played, in order
        self.queue_end = 0  # one past the last scheduled sample
        self.recorded_to = 0  # agent samples before this index are in the recording
        self.min_gen = 0  # tts.audio of a generation below this is stale
        self.counters = dict.fromkeys(
            ("frames_in", "frames_recorded", "frames_restored", "bad_frames", "pieces_in", "pieces_dropped_stale",
             "bad_pieces", "chunks_played", "chunks_cut", "chunks_dropped", "chunks_closed", "underruns", "input_lost",
             "output_lost"), 0)

    # ------------------------------------------------------------ timeline

    def time_of(self, index: int) -> int:
        """When timeline sample ``index`` plays / was captured."""
        return self.t0 + index * NS // self.sr

    def playhead(self, now_ns: int) -> int:
        """Output samples that have started playing by ``now_ns`` (the index of the next one)."""
        return -(-(now_ns - self.t0) * self.sr // NS)

    def _start(self, now_ns: int) -> None:
        if not self.started:
            self.started = True
            self.last_tick, self.next_flush = now_ns, now_ns + FLUSH_NS
            if self.t0 is None:
                self.t0 = now_ns
                self._save()
            elif self.in_offset is not None:
                self._take_over(now_ns)
        self.now = max(self.now, now_ns)

    def _save(self) -> None:
        if self.save_state is not None:
            self.save_state(AudioState(t0_ns=self.t0, stream_offset=self.in_offset, wav_lag=self.wav_lag,
                                       anchor_ns=self.anchor_ns, anchor_pos=self.anchor_pos, eof_pos=self.eof_pos))

    def _take_over(self, now_ns: int) -> None:
        """A restarted node whose killed process had started the user stream: its frames the
        recording lost go back in, and a WAV goes on at once (the session is live already)."""
        for ev in self.resume.frames:
            self._restore(ev)
        self.resume = None
        if self.wav is not None:
            self._anchor(self.playhead(now_ns), now_ns)

    def _anchor(self, index: int, now_ns: int) -> None:
        """(Re)start the user stream so that its next sample is at timeline ``index`` or up to a
        frame later: a first start fixes ``in_offset``; a restart keeps it, and the outage
        becomes whole frames of silence, sent at once, so stream_pos stays on the timeline."""
        if self.in_offset is None:
            self.in_offset = index - self.in_pos
        elif not (self.wav is not None and self._wav_ended() and not self.pad):  # the input goes on
            gap = max(0, index - self.in_offset - self.in_pos)
            gap = -(-gap // self.frame_n) * self.frame_n
            self.silence_until = self.in_pos + gap
            if self.wav is not None:
                self.wav_lag += gap
        self.anchored = True
        self.anchor_ns, self.anchor_pos = now_ns, self.in_pos
        self._save()

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
        elif isinstance(ev, Live) and self.wav is not None and not self.anchored:
            self._anchor(self.playhead(now_ns), now_ns)
        elif isinstance(ev, NodeReady) and ev.node == "tts":
            out += self._close_chunks(now_ns)
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
        if not self.started:
            return 0  # start at once: the first tick fixes the origin (or takes over a killed process's)
        due = [self.next_flush]
        if not self.in_done:
            if self.mic is not None:
                due.append(self.last_tick + self.cfg.frame_ms * 1_000_000)
            elif not self.anchored:
                pass  # the WAV waits for ctl.live
            elif self.cfg.realtime:
                due.append(self.time_of(self._frame_end()))
            else:
                due.append(self.last_tick + FAST_TICK_NS)
        ends = [self.time_of(c.end) for c in self.chunks.values() if c.last and c.start is not None]
        return min(due + ends)

    def stats(self) -> dict[str, int | float]:
        queued = max(self.queue_end - (self.playhead(self.now) if self.started else 0), 0)
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
            if self.started:
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
            out.append(self._eof(reason))
        return out

    def _eof(self, reason: str) -> AudioEof:
        self.eof_sent, self.eof_pos = True, self.in_pos
        self._save()
        return AudioEof(stream_pos=self.in_pos, reason=reason)

    def _wav_frames(self, now_ns: int) -> list[Event]:
        if not self.anchored:
            return []
        out: list[Event] = []
        while (not self._wav_ended() or self.pad) and (self.time_of(self._frame_end()) <= now_ns if self.cfg.realtime
                                                   else len(out) < FAST_BATCH_FRAMES):
            index = self.in_offset + self.in_pos
            pcm, from_wav = self._wav_next()
            out.append(self._frame(pcm, self.time_of(index)))
            if self.recorder is not None and from_wav:
                self.recorder.put(0, index, pcm)
            if self._wav_ended() and not self.eof_sent:
                out.append(self._eof("end of file"))
        if self._wav_ended() and not self.pad:
            self.in_done = True
            if not self.eof_sent:
                out.append(self._eof("end of file"))
        return out

    def _wav_ended(self) -> bool:
        return self.in_pos >= self.silence_until and self.in_pos - self.wav_lag >= len(self.wav)

    def _wav_next(self) -> tuple[np.ndarray, bool]:
        """The next frame's samples and whether they come from the file (not the outage's
        silence, nor the silence after the file's end)."""
        n = self._next_len()
        if self.in_pos < self.silence_until or self._wav_ended():
            return np.zeros(n, np.int16), False
        w = self.in_pos - self.wav_lag
        return self.wav[w : w + n], True

    def _next_len(self) -> int:
        if self.in_pos < self.silence_until:
            return min(self.frame_n, self.silence_until - self.in_pos)
        left = len(self.wav) - (self.in_pos - self.wav_lag)
        return min(self.frame_n, left) if left > 0 else self.frame_n

    def _frame_end(self) -> int:
        """Timeline index one past the last sample of the next WAV frame (a silence frame in an
        outage or after the file's end): it is captured by then."""
        return self.in_offset + self.in_pos + self._next_len()

    def _mic_block(self, block: np.ndarray, t_ns: int) -> list[Event]:
        if len(self.carry) == 0:
            self.carry_t = t_ns
        out = []
        if not self.anchored:  # the first block fixes the offset; after a restart, the outage is silence
            self._anchor(self.playhead(self.carry_t), t_ns)
            while self.in_pos < self.silence_until:
                index = self.in_offset + self.in_pos
                out.append(self._frame(np.zeros(self._next_len(), np.int16), self.time_of(index)))
        self.carry = np.concatenate([self.carry, block.astype(np.int16, copy=False)])
        while len(self.carry) >= self.frame_n:
            pcm, self.carry = self.carry[: self.frame_n], self.carry[self.frame_n :]
            if self.recorder is not None:
                self.recorder.put(0, self.in_pos + self.in_offset, pcm)
            out.append(self._frame(pcm, self.carry_t))
            self.carry_t += self.frame_n * NS // self.sr
        return out

    def _restore(self, ev: AudioIn) -> None:
        """A frame the killed process sent, back into the recording where a crash lost it."""
        if self.recorder is None or ev.sr_hz != self.sr or len(ev.pcm) != 2 * ev.n_samples:
            return
        index = self.in_offset + ev.stream_pos
        skip = max(0, self.recorder.written - index)
        if skip < ev.n_samples:
            self.recorder.put(0, index + skip, np.frombuffer(ev.pcm, dtype=np.int16)[skip:])
            self.counters["frames_restored"] += 1

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

    def _close_chunks(self, now_ns: int) -> list[Event]:
        """The TTS restarted: the chunks it was streaming will get no more pieces. Each is
        closed as it stands, so it is reported (``audio.played``) once its audio has played."""
        for c in self.chunks.values():
            if not c.last:
                c.last = True
                self.counters["chunks_closed"] += 1
        return self._advance(now_ns)

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
