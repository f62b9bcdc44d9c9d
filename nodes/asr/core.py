"""The ASR node's pure core: user audio in, voice activity and words out, on virtual time.

Consumes: ``audio.in`` (user audio frames), ``audio.played`` (what the agent's voice really
played, for self-echo suppression), ``ctl.reset``.
Produces: ``vad.start`` / ``vad.end`` (speech began / ended; ``stream_pos`` is the 16 kHz sample
index, ``audio_ns`` the same instant in ns of audio time, ``at_ns`` on the capture clock),
``vad.pause`` / ``vad.resume`` (``asr.silence_hop_ms`` of silence inside speech, placed where an
end would be / speech again before ``vad.end``),
``asr.partial`` (the revisable tail of the latest hypothesis, ``rev`` rising within an utterance;
an empty one retracts), ``asr.final`` (committed words with absolute audio times); both carry
``spoken_until_ns``, when their last word ended on the capture clock, so the agent can write the
user's real silence instead of the time since the words arrived.

The pipeline per frame: ``FrameAssembler`` (decode, mix-down, resample to 16 kHz) → a short ring
of recent audio → ``StreamingVad``. While the VAD says speech, the audio from the (padded) speech
start on is fed to the ``StreamingPolicy``, which re-transcribes its buffer every ``hop_s`` and
commits what two hypotheses agree on; at ``vad.end`` the utterance is flushed (every remaining
word committed) on the audio up to where the VAD decided it, so the last call hears the same
audio however the frames were cut. Audio outside speech is never transcribed; the preroll is
heard but no word is stamped before ``vad.start``, nor does a word of the flush end after
``vad.end`` (``policy``'s module doc says why). Committed words and partials lose
the words ``EchoFilter`` recognises as the agent's own voice (``asr.echo: suppress``).

Hearing first, transcribing on ticks. An ``audio.in`` frame only runs the VAD and buffers the
audio: ``vad.start``/``vad.end`` are returned by the call in which the VAD decides them. The
recogniser runs in ``on_tick``, which is due at once (``deadline_ns``) while a speech end's flush
is pending or a hop of new speech waits: the node's loop handles every frame that arrived during
a recogniser call (VAD only, fast) before it starts the next call. So the bus learns that the user
stopped within a frame of the VAD's decision, or after the one call in progress — not after the
flush's call and a backlog of hops — and the agent's pause clock starts then (a flushed final
only revises words). A ``vad.start`` or a reset runs a pending flush first. A pause inside
speech (``asr.silence_hop_ms`` of silence, reported by the VAD) is heard at once, not at the next
hop: when the speech ends in it, the flush has nothing left to hear and needs no call.

Keeping up: a call costs about the same whatever the hop (Whisper pads to 30 s), so a node that
falls behind real time would fall further behind. The lag is measured on the core's own clock
against the audio's: lag = (now − now at the first frame) − (audio time since the first frame),
so it needs no shared clock with the capture device and replayed audio is no special case.
When the node is behind by L, the next call waits for ``hop_s + L`` of new audio (at most
``max_hop_s``); once it has caught up the hop is ``hop_s`` again. A restarted node feeding the
logged audio it missed (``resume_at``, ``catching_up``; the ``resume`` module) transcribes only
every half ``max_buffer_s``: enough that no audio is dropped, few enough calls that it is live
again in seconds.

Frames carry no channel count: it is the frame's byte length over ``2 × n_samples`` (int16), so
an interleaved stereo frame is mixed down and anything that does not divide evenly is rejected.
A bad frame (unsupported rate, wrong ``n_samples``, bytes that are no whole number of samples)
is counted in ``stats()["bad_frames"]`` and dropped; the core never raises on audio. The
transcriber and the VAD model are injected, so tests drive this core with scripted fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from rtchat.bus.core import Core
from rtchat.bus.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    AudioPlayed,
    Event,
    Reset,
    VadEnd,
    VadPause,
    VadResume,
    VadStart,
    Word,
)
from rtchat.configs.schema import AsrConfig
from rtchat.nodes.asr.echo import EchoConfig, EchoFilter
from rtchat.nodes.asr.frames import NS_PER_SAMPLE, SR_HZ, Chunk, FrameAssembler, samples_to_ns
from rtchat.nodes.asr.policy import Committed, Partial, PolicyConfig, StreamingPolicy, Transcribe
from rtchat.nodes.asr.vad import SpeechProb, StreamingVad, VadConfig, VadEvent

log = logging.getLogger(__name__)

MAX_CHANNELS = 8  # a frame whose byte length implies more channels is rejected
RING_S = 1.0  # recent audio kept while no one speaks: a speech start reaches back into it


class AudioRing:
    """The most recent ``RING_S`` of contiguous 16 kHz audio, addressable by sample index."""

    def __init__(self, start: int = 0):
        self.keep = round(RING_S * SR_HZ)
        self.start = start
        self.audio = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.audio)

    def add(self, chunk: Chunk) -> None:
        if chunk.start != self.end:  # a resync: the old audio belongs to another stream
            self.start, self.audio = chunk.start, np.zeros(0, dtype=np.float32)
        self.audio = np.concatenate([self.audio, chunk.audio])
        if len(self.audio) > 4 * self.keep:  # trim in batches, not on every frame
            self.trim()

    def trim(self) -> None:
        cut = max(len(self.audio) - self.keep, 0)
        self.audio, self.start = self.audio[cut:], self.start + cut

    def since(self, sample: int, until: int | None = None) -> np.ndarray:
        """The audio from index ``sample`` (clamped to what is kept) to ``until`` (default: the end)."""
        lo = min(max(sample - self.start, 0), len(self.audio))
        return self.audio[lo : None if until is None else max(until - self.start, lo)]


def policy_config(cfg: AsrConfig) -> PolicyConfig:
    return PolicyConfig(
        hop_s=cfg.hop_s,
        first_word_hop_s=cfg.first_word_hop_s,
        max_buffer_s=cfg.max_buffer_s,
        trim_after_s=cfg.trim_after_s,
        prompt_words=cfg.prompt_words,
        silence_dbfs=cfg.silence_dbfs,
    )


def vad_config(cfg: AsrConfig) -> VadConfig:
    return VadConfig(
        start_threshold=cfg.vad_start_threshold,
        end_threshold=cfg.vad_end_threshold,
        min_silence_ms=cfg.vad_min_silence_ms,
        speech_pad_ms=cfg.vad_speech_pad_ms,
        pause_ms=cfg.silence_hop_ms,
    )


def echo_config(cfg: AsrConfig) -> EchoConfig:
    return EchoConfig(mode="played_words" if cfg.echo == "suppress" else "none", margin_s=cfg.echo_margin_s)


class AsrCore(Core):
    """VAD-gated streaming Whisper with LocalAgreement-2 commits (module doc)."""

    name = "asr"
    topics = ("audio.in", "audio.played")
    control_topics = ("ctl.",)

    def __init__(self, cfg: AsrConfig, transcribe: Transcribe, vad_model: SpeechProb):
        self.cfg = cfg
        self.transcribe = transcribe
        self.frames = FrameAssembler(max_gap_s=cfg.max_gap_s)
        self.vad = StreamingVad(vad_model, vad_config(cfg))
        self.policy = StreamingPolicy(policy_config(cfg))
        self.echo = EchoFilter(echo_config(cfg))
        self.ring = AudioRing()
        self.preroll = round(cfg.preroll_s * SR_HZ)
        self.in_speech = False
        self.flush_at: int | None = None  # vad.end is out; its utterance's flush is due (the sample it ended at)
        self.hear_until: int | None = None  # a pause inside speech: a hypothesis up to here is due
        self.capture_offset_ns: int | None = None  # capture clock minus audio time
        self.clock_origin: tuple[int, int] | None = None  # (now, audio ns) at the first frame
        self.base_hop, self.max_hop = self.policy.hop, round(cfg.max_hop_s * SR_HZ)
        self.base_first_word_hop = self.policy.first_word_hop
        self.lag_ns = 0
        self.catching_up = False  # feeding logged audio after a restart: the hop is max_buffer_s / 2
        self.counts = {"bad_frames": 0, "vad_starts": 0, "vad_ends": 0, "vad_pauses": 0, "partials": 0, "finals": 0, "played": 0}

    # ---------------------------------------------------------------- events

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        if isinstance(ev, AudioIn):
            self.keep_up(ev, now_ns)
            return self.on_audio(ev)
        if isinstance(ev, AudioPlayed):
            self.on_played(ev)
        elif isinstance(ev, Reset):
            self.reset()
        return []

    def deadline_ns(self) -> int | None:
        """Due at once while a speech end's flush is pending, or a hop of speech or a pause
        (``_pause``) waits to be heard."""
        due = self.in_speech and (self.hear_until is not None or (self.policy.due() and not self._hop_waits()))
        return 0 if self.flush_at is not None or due else None

    def on_tick(self, now_ns: int) -> list[Event]:
        """The recogniser's work: the pending flush, then a hypothesis of the open utterance (up to
        the silence it fell into, when one is due: ``_pause``)."""
        out = self._flush()
        if self.in_speech and (self.hear_until is not None or not self._hop_waits()):
            until, self.hear_until = self.hear_until, None
            out += self._publish(self.policy.step(self.transcribe, until))
        return out

    def _hop_waits(self) -> bool:
        """A silence has begun inside speech and is not yet a pause: the hop's call waits for it
        (at most ``asr.silence_hop_ms``). If the speech is ending there, the pause's own
        hypothesis is the call to make, and a hop's call begun now would hold the VAD behind it
        — ``vad.pause`` and ``vad.end`` would reach the bus only after it (the frames that decide
        them are read between calls). If the speech goes on, the hop comes a window or two late."""
        return not self.catching_up and self.vad.silence_begun()

    def on_audio(self, ev: AudioIn) -> list[Event]:
        try:
            channels = self._channels(ev)
            chunks = self.frames.push(ev.pcm, ev.sr_hz, ev.n_samples, ev.stream_pos, channels=channels)
        except ValueError as exc:
            self.counts["bad_frames"] += 1
            log.debug("bad audio frame dropped: %s", exc)
            return []
        self.capture_offset_ns = ev.t_capture_ns - samples_to_ns(round(ev.stream_pos * SR_HZ / ev.sr_hz))
        out: list[Event] = []
        for chunk in chunks:
            out += self._chunk(chunk)
        return out

    def keep_up(self, ev: AudioIn, now_ns: int) -> None:
        """Measure how far behind real time the node is and stretch the hop by as much."""
        if ev.sr_hz <= 0:
            return  # a bad frame; on_audio counts it
        audio_ns = (ev.stream_pos + ev.n_samples) * 1_000_000_000 // ev.sr_hz
        if self.clock_origin is None:
            self.clock_origin = (now_ns, audio_ns)
        self.lag_ns = max(0, (now_ns - self.clock_origin[0]) - (audio_ns - self.clock_origin[1]))
        if self.catching_up:
            self.policy.hop = self.policy.first_word_hop = max(self.base_hop, self.policy.max_len // 2)
        else:
            lag = self.lag_ns // NS_PER_SAMPLE
            self.policy.hop = min(self.base_hop + lag, self.max_hop)
            self.policy.first_word_hop = min(self.base_first_word_hop + lag, self.max_hop)

    def on_played(self, ev: AudioPlayed) -> None:
        """Remember when (in audio time) the agent's words were audible."""
        self.counts["played"] += 1
        if self.capture_offset_ns is None:  # no user audio yet: its clock is unknown
            return
        self.echo.played(ev.start_ns - self.capture_offset_ns, ev.end_ns - self.capture_offset_ns, ev.text)

    def resume_at(self, start: int, open_since: int | None, committed: Sequence[Word], utterance: int,
                  rev: int = 0, partial_shown: bool = False) -> None:
        """Continue where a previous process of this node stopped (the ``resume`` module): the
        audio fed next starts at 16 kHz index ``start``. With ``open_since`` an utterance is open
        since that index (its vad.start is out): it is heard from ``start`` on, with no new
        vad.start. ``committed`` (its last committed words) are the prompt and what hypotheses
        must not repeat; ``utterance``, ``rev`` and ``partial_shown`` go on from its last output."""
        self.ring = AudioRing(start)
        self.in_speech = open_since is not None
        if self.in_speech:
            self.vad.start_in_speech(start, open_since)
        self.policy.skip_to(start, speech_from=open_since)
        self.policy.resume(committed, utterance, rev, partial_shown)

    def reset(self) -> None:
        """A new conversation: drop the open utterance and the remembered playback."""
        self.flush_at = None
        self.policy.flush()
        self.policy.committed = []
        self.vad.close()
        self.in_speech = False
        self.echo.reset()

    def stats(self) -> dict[str, int | float]:
        frame_stats = {f"frames_{k}": v for k, v in vars(self.frames.stats).items()}
        policy_stats = {f"policy_{k}": v for k, v in self.policy.stats.items()}
        return self.counts | frame_stats | policy_stats | {"echo_words_dropped": self.echo.dropped,
                                                           "lag_ms": self.lag_ns / 1e6, "hop_ms": self.policy.hop / 16}

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _channels(ev: AudioIn) -> int:
        if ev.n_samples <= 0:
            raise ValueError(f"n_samples must be > 0, got {ev.n_samples}")
        channels, rest = divmod(len(ev.pcm), 2 * ev.n_samples)
        if rest or not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"{len(ev.pcm)} bytes is not n_samples={ev.n_samples} int16 frames of 1-{MAX_CHANNELS} channels")
        return channels

    def _chunk(self, chunk: Chunk) -> list[Event]:
        out: list[Event] = []
        if chunk.start != self.ring.end and self.in_speech:  # a resync ends the utterance
            out += self._end(self.ring.end)
        self.ring.add(chunk)
        for ev in self.vad.push(chunk):
            if ev.kind == "pause":
                out += self._pause(ev)
            elif ev.kind == "resume":
                out += self._resume(ev)
            else:
                out += self._start(ev) if ev.kind == "start" else self._end(ev.sample, ev.at)
        if self.in_speech:
            self.policy.add(self.ring.since(self.policy.end))
        else:
            self.ring.trim()
        return out

    def _pause(self, ev: VadEvent) -> list[Event]:
        """The VAD heard ``asr.silence_hop_ms`` of silence inside speech: say so (``vad.pause``: the
        agent may take the turn in it), and a hypothesis of the audio up to there is due now, not
        at the next hop. If the speech ends in this silence, the VAD places its end (the last
        speech window + its pad, under a window) no later, so the flush at ``vad.end`` has heard
        it all and commits this hypothesis without a call: the final comes with ``vad.end``, not
        a recogniser call after it. If speech resumes (``vad.resume``), it was one hop, early. No
        early hypothesis while catching up (its hops are long on purpose)."""
        if not self.in_speech:
            return []
        if not self.catching_up:
            self.hear_until = ev.at
        self.counts["vad_pauses"] += 1
        return [self._vad_event(VadPause, ev.sample)]

    def _resume(self, ev: VadEvent) -> list[Event]:
        """The speech goes on after a ``vad.pause``."""
        return [self._vad_event(VadResume, ev.sample)] if self.in_speech else []

    def _start(self, ev: VadEvent) -> list[Event]:
        out = self._flush()  # the last utterance's words first
        self.in_speech = True
        self.counts["vad_starts"] += 1
        self.policy.skip_to(max(ev.sample - self.preroll, self.ring.start), speech_from=ev.sample)
        return out + [self._vad_event(VadStart, ev.sample)]

    def _end(self, sample: int, heard_until: int | None = None) -> list[Event]:
        """Speech ended: say so at once (``vad.end``), with the utterance's audio (up to
        ``heard_until``, default all) in the policy; its flush — transcribe what is new, commit
        everything, close the utterance — is the next thing the core does (``_flush``)."""
        if not self.in_speech:
            return []
        self.in_speech, self.hear_until = False, None
        self.vad.close()  # a resync ends speech here, before the VAD sees the jump
        self.counts["vad_ends"] += 1
        self.policy.add(self.ring.since(self.policy.end, heard_until))
        self.flush_at = sample
        return [self._vad_event(VadEnd, sample)]

    def _vad_event(self, kind: type[VadStart | VadEnd | VadPause | VadResume], sample: int) -> Event:
        """A vad.* event at 16 kHz index ``sample``: in audio time and on the capture clock."""
        audio_ns = samples_to_ns(sample)
        return kind(stream_pos=sample, audio_ns=audio_ns, at_ns=self._clock(audio_ns))

    def _flush(self) -> list[Event]:
        """The pending speech end's flush (none pending: nothing)."""
        if self.flush_at is None:
            return []
        sample, self.flush_at = self.flush_at, None
        return self._publish(self.policy.flush(self.transcribe, speech_until=sample))

    def _clock(self, audio_ns: int) -> int:
        """Audio time → the capture clock (0 while unknown)."""
        return 0 if self.capture_offset_ns is None else audio_ns + self.capture_offset_ns

    def _publish(self, outputs: list[Committed | Partial]) -> list[Event]:
        out: list[Event] = []
        for o in outputs:
            if isinstance(o, Committed):
                words, _ = self.echo.filter(o.words)
                if words:
                    self.counts["finals"] += 1
                    out.append(AsrFinal(text=" ".join(w.text for w in words), utterance=o.utterance, words=words,
                                        spoken_until_ns=self._clock(words[-1].end_ns)))
            else:
                words = tuple(w for w in o.words if not self.echo.is_echo(w))
                if words or not o.words:  # an all-echo partial says nothing new
                    self.counts["partials"] += 1
                    until = self._clock(words[-1].end_ns) if words else 0
                    out.append(AsrPartial(text=" ".join(w.text for w in words), rev=o.rev, utterance=o.utterance, words=words,
                                          spoken_until_ns=until))
        return out
