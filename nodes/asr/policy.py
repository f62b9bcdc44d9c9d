"""The streaming policy of the ASR: which audio to transcribe, which words to commit.

A buffer of 16 kHz audio (with the absolute sample index of its start) grows as audio
arrives. Every ``hop_s`` of new audio, ``step`` transcribes the buffer, prompted with
the last committed words that start before it (words still in the buffer are heard, not
prompted), and applies LocalAgreement-2 (whisper_streaming's policy): a word
is committed once two consecutive hypotheses agree on it — the longest common prefix, by
normalised word (lower case, punctuation stripped), of this hypothesis and the uncommitted
tail of the previous one. The rest is the partial, with a revision number that increases
with every hypothesis of the utterance. ``flush`` (the VAD closed the utterance) transcribes
any audio not yet heard and commits the whole latest hypothesis; the next utterance starts.

A first call that finds no word (it hears the preroll and ~0.2 s of speech, often too little)
is followed after ``first_word_hop_s`` (when set, shorter than the hop) instead of a whole hop,
and so on until one finds a word: the first partial shows sooner. From then on calls follow
``hop_s``.

A step hears the buffer up to the last whole hop after the previous call (``heard + k × hop``),
not to whatever has arrived: where a hypothesis ends then depends on stream positions only, not
on how the audio was cut into frames. At 48 kHz the resampler hands on 16 kHz audio in blocks of
~490 samples, so "everything so far" ended up to 30 ms later than at 16 kHz, the model heard
different audio, and which hypotheses agreed (and the word times committed) changed with the
capture rate. Audio past the last whole hop waits for the next call.

Trimming keeps the cost of one call independent of the utterance's length:
- after a commit the buffer is cut between the last committed word and the next one — at the
  committed word's end, or earlier if the next hypothesis word starts earlier. No audio of a
  committed word is kept: the model would re-hear its tail as a fragment, and the prompt
  already carries its text. With ``trim_after_s`` > 0 the cut waits until the buffer is that
  long (whisper_streaming waits for ~15 s, trading cost for more acoustic context);
- a buffer longer than ``max_buffer_s`` when a step is due is force-trimmed before the call:
  the uncommitted words of the latest hypothesis are committed as they stand (a possibly
  wrong word is better than a lost one) and the buffer is cut after them; if it is still too
  long (no words, or words that end early) its oldest audio is dropped down to the maximum
  and counted. So the model never sees more than ``max_buffer_s``.

Guards: a hypothesis is cleaned before it counts — words that re-state committed audio
(starting more than ``overlap_tolerance_s`` before the committed end) or repeat the last
committed words (1–4-word overlap, within 1 s of them) are dropped; a 1–8-word n-gram repeated
``max_repeats`` or more times in a row is cut back to one occurrence (a decoder loop; real
"ha ha ha" is cut too); a buffer whose loudest 20 ms window is below ``silence_dbfs`` is not
transcribed at all (hallucinations on silence) and is dropped. A hypothesis' unplaced tail
(``placed``) is never committed: trailing words with no span, or a trailing group of words that
share one start. Whisper's alignment squeezes there the words its decoder wrote past the audio
(the prompt or the sentence just heard, again); they stay partial until a hypothesis places
them, and a flush or a forced trim drops them (at a 0.3 s hop they were 192 insertions of 6
minutes of speech; 21 with this rule).

Word times are absolute audio time in integer ns (16 kHz sample index × 62 500), clamped to
the buffer and made monotonic: each word starts no earlier than the previous word ends. They
also lie inside the VAD's speech span: no word starts before the utterance's speech start
(``skip_to(…, speech_from=)``) and no word a flush commits ends after its speech end
(``flush(…, speech_until=)``). The audio around the span (the preroll, the trailing silence
before the VAD decides) is context for the model, not speech, and Whisper cannot place word
edges in it: its word times come from a DTW path through the cross-attention at 50 frames/s
(20 ms) that runs from the first frame of the audio to the last, so the first word after
leading non-speech starts at 0.00 — or, by faster-whisper's "long word after a pause"
heuristic, at its end minus twice the median word duration — and the last word can stretch
over trailing non-speech. Those are artefacts of the alignment, not the onset, which the VAD
locates (to within its pad and one 32 ms window).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from rtchat.bus.events import Word
from rtchat.nodes.asr.frames import NS_PER_SAMPLE, SR_HZ, samples_to_ns

log = logging.getLogger(__name__)

RawWord = tuple[str, float, float, float]  # (text, start_s, end_s, probability), times from the buffer start
Transcribe = Callable[[np.ndarray, str], Sequence[RawWord]]
SILENCE_WINDOW = SR_HZ * 20 // 1000  # 320 samples: the window of the silence gate
REPEAT_WINDOW_NS = 1_000_000_000  # a head repeating committed words further away is taken as spoken
MAX_NGRAM = 4  # longest n-gram checked for overlap with committed words
MAX_LOOP_NGRAM = 8  # longest n-gram checked for decoder loops (tiny.en looped "to find a good place" ×40)
_STRIP = re.compile(r"[^\w']+")


def normalise(word: str) -> str:
    """Lower case without punctuation ("Hello," → "hello", "don't" stays); "" for pure punctuation."""
    return _STRIP.sub("", word.lower()).strip("'")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    hop_s: float = 0.5  # new audio between two transcriptions
    first_word_hop_s: float = 0.0  # the hop after a call that found no word yet (0: hop_s); shorter shows the first word sooner
    max_buffer_s: float = 15.0  # the most audio one transcription sees
    trim_after_s: float = 0.0  # cut at commits only once the buffer is this long (0: at every commit)
    prompt_words: int = 50  # committed words passed as the prompt
    max_repeats: int = 3  # an n-gram repeated this often in a row is a loop
    silence_dbfs: float = -50.0  # loudest 20 ms window (rms) below this: no transcription
    overlap_tolerance_s: float = 0.1  # hypothesis words starting this long before the committed end still count

    def __post_init__(self):
        if not 0 < self.hop_s < self.max_buffer_s:
            raise ValueError(f"need 0 < hop_s < max_buffer_s, got hop_s={self.hop_s}, max_buffer_s={self.max_buffer_s}")
        if not 0 <= self.first_word_hop_s <= self.hop_s:
            raise ValueError(f"need 0 <= first_word_hop_s <= hop_s, got {self.first_word_hop_s}, hop_s={self.hop_s}")
        if not 0 <= self.trim_after_s <= self.max_buffer_s:
            raise ValueError(f"trim_after_s must lie in [0, max_buffer_s], got {self.trim_after_s}")
        if self.max_repeats < 2 or self.prompt_words < 0 or self.overlap_tolerance_s < 0:
            raise ValueError("max_repeats >= 2, prompt_words >= 0 and overlap_tolerance_s >= 0 are required")


@dataclasses.dataclass(frozen=True, slots=True)
class Committed:
    """Words that will not change (→ asr.final)."""

    words: tuple[Word, ...]
    utterance: int

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclasses.dataclass(frozen=True, slots=True)
class Partial:
    """The uncommitted tail of the latest hypothesis (→ asr.partial); replaces the previous one."""

    words: tuple[Word, ...]
    rev: int
    utterance: int

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


Output = Committed | Partial


def cut_loops(words: list[Word], max_repeats: int) -> tuple[list[Word], int]:
    """Cut every 1–8-word n-gram repeated ``max_repeats``+ times in a row back to one occurrence.

    Scans left to right, trying the shortest n first. Returns (words, number of loops cut).
    """
    keys = [normalise(w.text) for w in words]
    out: list[Word] = []
    i = loops = 0
    while i < len(words):
        for n in range(1, MAX_LOOP_NGRAM + 1):
            reps = 1
            while i + (reps + 1) * n <= len(words) and keys[i + reps * n : i + (reps + 1) * n] == keys[i : i + n]:
                reps += 1
            if reps >= max_repeats:
                out += words[i : i + n]
                i += reps * n
                loops += 1
                break
        else:
            out.append(words[i])
            i += 1
    return out, loops


def _not_before(w: Word, t_ns: int) -> Word:
    """The word moved so that it starts no earlier than t_ns."""
    if w.start_ns >= t_ns:
        return w
    return dataclasses.replace(w, start_ns=t_ns, end_ns=max(w.end_ns, t_ns))


def _not_after(w: Word, t_ns: float) -> Word:
    """The word moved so that it ends no later than t_ns."""
    if w.end_ns <= t_ns:
        return w
    end = int(t_ns)
    return dataclasses.replace(w, start_ns=min(w.start_ns, end), end_ns=end)


def common_prefix(a: Sequence[Word], b: Sequence[Word]) -> int:
    """Length of the longest common prefix of two word sequences, by normalised text."""
    n = 0
    while n < min(len(a), len(b)) and normalise(a[n].text) == normalise(b[n].text):
        n += 1
    return n


def placed(words: Sequence[Word]) -> int:
    """How many words precede the hypothesis' unplaced tail (module doc): trailing words with no
    span, and a trailing group of words that share one start (all but its last have no span)."""
    n = len(words)
    while n:
        start, k = words[n - 1].start_ns, n
        while k and words[k - 1].start_ns == start:
            k -= 1
        if n - k < 2 and words[n - 1].end_ns > start:
            break
        n = k
    return n


def loudest_dbfs(audio: np.ndarray) -> float:
    """The rms of the loudest 20 ms window, in dB full scale (−inf for digital silence)."""
    if not len(audio):
        return -math.inf
    pad = (-len(audio)) % SILENCE_WINDOW
    frames = np.concatenate([audio, np.zeros(pad, dtype=audio.dtype)]).reshape(-1, SILENCE_WINDOW)
    peak = float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).max())
    return 20 * math.log10(peak) if peak > 0 else -math.inf


class StreamingPolicy:
    """LocalAgreement-2 over a trimmed sliding buffer (module doc). Pure: no model, no clock."""

    def __init__(self, cfg: PolicyConfig | None = None, start: int = 0):
        self.cfg = cfg or PolicyConfig()
        self.hop = round(self.cfg.hop_s * SR_HZ)
        self.first_word_hop = round(self.cfg.first_word_hop_s * SR_HZ) or self.hop
        self.max_len = round(self.cfg.max_buffer_s * SR_HZ)
        self._buf = np.zeros(0, dtype=np.float32)
        self._queued: list[np.ndarray] = []  # added since the buffer was last read (joined lazily)
        self._n_queued = 0
        self.start = start  # 16 kHz sample index of buf[0]
        self.heard = start  # end of the audio the latest hypothesis saw
        self.speech_from_ns = samples_to_ns(start)  # no word of this utterance starts earlier
        self.pending: list[Word] = []  # uncommitted tail of the latest hypothesis
        self.committed: list[Word] = []  # recent committed words (the prompt)
        self.committed_end_ns = samples_to_ns(start)
        self.utterance = 0
        self.rev = 0
        self.partial_shown = False
        self.calls_without_word = 0  # calls of this utterance so far, none of which found a word (then: -1)
        self.stats = {"calls": 0, "silent_skips": 0, "loops_cut": 0, "forced_trims": 0, "dropped_samples": 0}

    @property
    def buf(self) -> np.ndarray:
        """The buffered audio, float32 16 kHz, starting at sample index ``start``."""
        if self._queued:
            self._buf = np.concatenate([self._buf, *self._queued])
            self._queued, self._n_queued = [], 0
        return self._buf

    @property
    def end(self) -> int:
        return self.start + len(self._buf) + self._n_queued

    def add(self, audio: np.ndarray) -> None:
        """Append contiguous 16 kHz float32 audio (frames are joined when the buffer is next read)."""
        self._queued.append(np.asarray(audio, dtype=np.float32))
        self._n_queued += len(audio)

    def restart_at(self, start: int) -> list[Output]:
        """Audio jumps to ``start`` (a stream resync): the utterance is flushed, the buffer emptied."""
        out = self.flush()
        self.start = self.heard = start
        self.speech_from_ns = samples_to_ns(start)
        return out

    def skip_to(self, start: int, speech_from: int | None = None) -> None:
        """The next audio added starts at 16 kHz index ``start`` (audio in between is not speech
        and was never added). Any buffered audio is dropped; the start never moves backwards.
        Words are stamped no earlier than ``speech_from`` (default: ``start``), the index where
        the VAD found speech; audio between ``start`` and it is heard as context only."""
        self._drop_to(self.end)
        self.start = self.heard = max(start, self.start)
        self.speech_from_ns = samples_to_ns(max(self.start if speech_from is None else speech_from, self.start))

    def resume(self, committed: Sequence[Word], utterance: int, rev: int = 0, partial_shown: bool = False) -> None:
        """Take over from a previous process of the node: its last committed words (the prompt,
        and what a hypothesis must not repeat), the utterance its next words belong to, that
        utterance's last revision and whether a partial of it is showing."""
        self.committed = list(committed)[-max(self.cfg.prompt_words, MAX_NGRAM) :]
        if self.committed:
            self.committed_end_ns = max(self.committed_end_ns, self.committed[-1].end_ns)
        self.utterance, self.rev, self.partial_shown = utterance, rev, partial_shown

    @property
    def hop_now(self) -> int:
        """The hop of the next call: ``first_word_hop`` after calls that found no word yet."""
        return min(self.hop, self.first_word_hop) if self.calls_without_word > 0 else self.hop

    def due(self) -> bool:
        return self.end - self.heard >= self.hop_now

    def step(self, transcribe: Transcribe, until: int | None = None) -> list[Output]:
        """Transcribe up to the last whole hop when one is due (or up to index ``until``, when that
        is new audio: the core's hypothesis at a silence); commit what two hypotheses agree on."""
        if until is None:
            if not self.due():
                return []
            hop = self.hop_now
            until = self.heard + (self.end - self.heard) // hop * hop
        elif not self.heard < until <= self.end:
            return []
        out = self._force_trim(until) if until - self.start > self.max_len else []
        hyp = self._hypothesis(transcribe, until)
        if hyp is None:
            return out
        n = min(common_prefix(hyp, self.pending), placed(hyp))
        self.pending = hyp[n:]
        if n:
            out.append(self._commit(hyp[:n]))
            if len(self.buf) >= self.cfg.trim_after_s * SR_HZ:
                self._cut_after_committed()
        return out + self._partial()

    def flush(self, transcribe: Transcribe | None = None, speech_until: int | None = None) -> list[Output]:
        """Close the utterance: hear any new audio, commit the whole latest hypothesis. With
        ``speech_until`` (the VAD's speech end) no word ends later: Whisper stretches the last
        word over trailing non-speech as it does the first over leading (module doc); and audio
        after it is not heard when the last hypothesis already reached it — the trailing silence
        alone made tiny.en say "Thank you." (3 of 33 utterances of ``rtchat bench asr``)."""
        out: list[Output] = []
        unheard_speech = self.end > self.heard and (speech_until is None or speech_until > self.heard)
        if transcribe is not None and unheard_speech:
            hyp = self._hypothesis(transcribe, self.end)
            if hyp is not None:
                self.pending = hyp
        until_ns = math.inf if speech_until is None else samples_to_ns(speech_until)
        words = [_not_after(w, until_ns) for w in self.pending]
        words = words[: placed(words)]
        if words:
            out.append(self._commit(words))
        elif self.partial_shown:  # the last partial said words that were not spoken after all
            self.rev += 1
            out.append(Partial(words=(), rev=self.rev, utterance=self.utterance))
        self.pending, self.partial_shown, self.calls_without_word = [], False, 0
        self._drop_to(self.end)
        self.utterance += 1
        self.rev = 0
        return out

    # ---------------------------------------------------------------- internals

    def _hypothesis(self, transcribe: Transcribe, until: int) -> list[Word] | None:
        """A cleaned hypothesis of the buffer up to index ``until``, or None when that is silent."""
        self.heard = until
        if self.calls_without_word >= 0:
            self.calls_without_word += 1
        audio = self.buf[: until - self.start]
        if loudest_dbfs(audio) < self.cfg.silence_dbfs:
            self.stats["silent_skips"] += 1
            if not self.pending:
                self._drop_to(until)
            return None
        prompt = self._prompt()
        self.stats["calls"] += 1
        raw = transcribe(audio, prompt)
        words, loops = cut_loops(self._timed(raw, until), self.cfg.max_repeats)
        self.stats["loops_cut"] += loops
        self.rev += 1
        words = self._after_committed(words)
        if words:
            self.calls_without_word = -1
        return words

    def _prompt(self) -> str:
        """The last committed words whose audio starts before the buffer (whisper_streaming's rule).
        Committed words still inside the buffer are heard, not prompted: prompted, Whisper skips
        their audio and stretches the next word back over it, and the overlap guard drops it."""
        if not self.cfg.prompt_words:
            return ""
        start_ns = samples_to_ns(self.start)
        before = [w for w in self.committed if w.start_ns < start_ns]
        return " ".join(w.text for w in before[-self.cfg.prompt_words :])

    def _timed(self, raw: Sequence[RawWord], until: int) -> list[Word]:
        """Buffer-relative seconds → absolute ns, clamped to [speech start, ``until``] and monotonic;
        punctuation-only words dropped."""
        base, hi = samples_to_ns(self.start), samples_to_ns(until)
        words, prev_end = [], max(base, self.speech_from_ns)
        for text, start_s, end_s, prob in raw:
            text = text.strip()
            if not normalise(text):
                continue
            start = min(max(base + round(start_s * 1e9), prev_end), hi)
            end = min(max(base + round(end_s * 1e9), start), hi)
            words.append(Word(text=text, start_ns=start, end_ns=end, prob=prob))
            prev_end = end
        return words

    def _after_committed(self, words: list[Word]) -> list[Word]:
        """Drop words that re-state committed audio, and a head that repeats the last committed
        words when it starts within REPEAT_WINDOW_NS of them (the model re-hearing their tail)."""
        limit = self.committed_end_ns - round(self.cfg.overlap_tolerance_s * 1e9)
        words = [w for w in words if w.start_ns >= limit]
        if not words or words[0].start_ns - self.committed_end_ns > REPEAT_WINDOW_NS:
            return words
        tail = [normalise(w.text) for w in self.committed[-MAX_NGRAM:]]
        head = [normalise(w.text) for w in words[:MAX_NGRAM]]
        for n in range(min(len(tail), len(head)), 0, -1):
            if tail[-n:] == head[:n]:
                return words[n:]
        return words

    def _commit(self, words: Sequence[Word]) -> Committed:
        words = tuple(_not_before(w, self.committed_end_ns) for w in words)
        self.committed_end_ns = words[-1].end_ns
        self.committed = (self.committed + list(words))[-max(self.cfg.prompt_words, MAX_NGRAM) :]
        log.debug("commit %r (utterance %d)", " ".join(w.text for w in words), self.utterance)
        return Committed(words=words, utterance=self.utterance)

    def _partial(self) -> list[Output]:
        if not self.pending and not self.partial_shown:
            return []
        self.partial_shown = bool(self.pending)
        return [Partial(words=tuple(self.pending), rev=self.rev, utterance=self.utterance)]

    def _cut_after_committed(self) -> None:
        """Cut between the last committed word and the next hypothesis word."""
        cut_ns = self.committed_end_ns
        if self.pending:
            cut_ns = min(cut_ns, self.pending[0].start_ns)
        self._drop_to(cut_ns // NS_PER_SAMPLE)

    def _force_trim(self, until: int) -> list[Output]:
        """The audio up to ``until`` is over max_buffer_s: commit the pending words placed in
        audio, cut, then drop the oldest."""
        self.stats["forced_trims"] += 1
        out: list[Output] = []
        n = placed(self.pending)  # the pending words Whisper placed in audio
        if n:
            out.append(self._commit(self.pending[:n]))
        if self.pending:
            self.pending = []
            self._drop_to(self.committed_end_ns // NS_PER_SAMPLE)
        excess = until - self.start - self.max_len
        if excess > 0:
            self.stats["dropped_samples"] += excess
            self._drop_to(self.start + excess)
        return out

    def _drop_to(self, sample: int) -> None:
        """Discard buffered audio before 16 kHz index ``sample``."""
        buf = self.buf
        k = min(max(sample - self.start, 0), len(buf))
        self._buf, self.start = buf[k:], self.start + k
