"""The TTS node's pure core: agent text in, PCM pieces out, on virtual time.

Consumes: ``agent.say`` (words to speak now), ``agent.pause`` (nothing to render: the audio node
plays silence when idle; counted), ``agent.prerender`` (a predicted reply, in chunks, to render
ahead), ``agent.release`` (play pre-rendered chunks now), ``agent.cancel`` (barge-in),
``ctl.reset``, ``ctl.config`` (``tts.voice``, ``tts.max_chars``).
Produces: ``tts.audio``, one or more pieces per agent chunk, ``last`` on the chunk's final piece;
``node.error`` when the engine fails on a piece (the node goes on).

Streaming. A say is sanitised and split into pieces (``sanitize.split``: sentences, pause
silences); ``on_tick`` renders ONE piece per call and the deadline is "now" while work is
pending, so the first sentence goes out before the rest of a long text is rendered and the shell
reads new events (a cancel) between pieces. Silence pieces are exact zeros: ``round(s × rate)``
samples. A piece of speech starts with its words: the engine's quiet lead-in (Piper's 40–60 ms
under ``LEAD_IN_DBFS``) is cut, as it would only delay the agent's first sound. A chunk that
sanitises to nothing emits nothing (``empty``).

Pre-rendering. ``agent.prerender`` replaces the cache: one entry per chunk, each rendered from its
own text, so an audio chunk holds exactly its words (the reference rendered the whole reply and
cut it into equal durations, mid-word). Cache work runs on ticks after all pending say work.
``agent.release`` comes with the NEXT turn number (the floor changed), so the cache is matched by
content: the first n entries are used when their joined text equals the release's text
(whitespace-normalised; a trailing unfinished pause the agent dropped is ignored). They go out as
chunks ``chunk … chunk+n-1`` at once — rendering what the ticks have not yet done — or behind any
say work still queued, so order is kept. Without a usable cache (none, an older gen, other
words) the text is rendered as n word groups, one per chunk index, and the stale cache dropped.

Generations. ``agent.cancel(gen)`` drops every queued job and cache entry of an older gen at once;
later events of an older gen are ignored (``dropped``). ``ctl.reset`` drops everything.

The engine is injected (``TtsBackend``) and so is ``timer`` (monotonic ns), read only to measure
render time for ``stats()`` (time to first audio, real-time factor), never to decide anything.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
from collections.abc import Callable

import numpy as np

from rtchat.bus.core import Core
from rtchat.bus.events import (
    AgentCancel,
    AgentPause,
    AgentPrerender,
    AgentRelease,
    AgentSay,
    ConfigChange,
    Event,
    NodeError,
    Reset,
    TtsAudio,
)
from rtchat.common.audio import loud_span
from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.backend import TtsBackend
from rtchat.nodes.tts.sanitize import Piece, Silence, Speech, normalise, split

log = logging.getLogger(__name__)

LIVE_KEYS = ("tts.voice", "tts.max_chars")  # ctl.config keys applied while running
LEAD_IN_DBFS = -60.0  # an engine's quiet start of speech: Piper opens every text with 40–60 ms under it
LEAD_IN_KEEP_MS = 5  # kept before the first louder 10 ms window


def lead_in(pcm: np.ndarray, sr_hz: int) -> int:
    """Samples of the engine's quiet lead-in before its speech (none for silence throughout): the
    agent's sound starts with its words — the pauses it means are the pause pieces' exact zeros."""
    span = loud_span(pcm, sr_hz, LEAD_IN_DBFS)
    return 0 if span is None else max(0, span[0] - sr_hz * LEAD_IN_KEEP_MS // 1000)


_UNFINISHED_PAUSE = re.compile(r"\s*(?:<p>\s*)?\(\d*\.?\d*$")


@dataclasses.dataclass(slots=True)
class Rendered:
    text: str
    pcm: np.ndarray  # int16


Part = Piece | Rendered


@dataclasses.dataclass(slots=True)
class Job:
    """One agent chunk on its way out: its parts, rendered or not, in order."""

    turn: int
    gen: int
    chunk: int
    parts: collections.deque[Part]
    said_ns: int | None = None  # arrival of the agent.say (for time to first audio)
    emitted: int = 0  # pieces already sent


@dataclasses.dataclass(slots=True)
class Entry:
    """One pre-rendered chunk: its text and its parts, rendered in place by the ticks."""

    text: str
    parts: list[Part]

    def pending(self) -> int | None:
        return next((i for i, p in enumerate(self.parts) if not isinstance(p, Rendered)), None)


@dataclasses.dataclass(slots=True)
class Cache:
    gen: int
    entries: list[Entry]


def word_groups(text: str, n: int) -> list[str]:
    """``text`` as n consecutive groups of words (sizes differ by at most one)."""
    words = text.split()
    sizes = [len(words) // n + (i < len(words) % n) for i in range(n)]
    groups, pos = [], 0
    for size in sizes:
        groups.append(" " + " ".join(words[pos : pos + size]) if size else "")
        pos += size
    return groups


class TtsCore(Core):
    """Sanitise, split, render piece by piece, pre-render and release (module doc)."""

    name = "tts"
    topics = ("agent.",)
    control_topics = ("ctl.",)

    def __init__(self, cfg: TtsConfig, engine: TtsBackend, timer: Callable[[], int] | None = None):
        self.cfg = cfg
        self.engine = engine
        self.timer = timer or (lambda: 0)
        self.jobs: collections.deque[Job] = collections.deque()
        self.cache: Cache | None = None
        self.min_gen = 0  # events of an older gen are ignored
        self.due_ns = 0  # when pending work was queued: on_tick is due at once
        self.counts = dict.fromkeys(
            ("says", "pieces", "empty", "pauses", "prerenders", "releases_cached", "releases_rendered",
             "cancels", "dropped", "engine_errors"), 0)
        self.render_ns = 0
        self.audio_samples = 0
        self.ttfa_ns: int | None = None

    # ---------------------------------------------------------------- events

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        if isinstance(ev, Reset):
            self._drop(lambda gen: True)
            self.min_gen = 0
            return []
        if isinstance(ev, ConfigChange):
            self._configure(ev.changes)
            return []
        gen = getattr(ev, "gen", None)
        if gen is None:
            return []
        if gen < self.min_gen:
            self.counts["dropped"] += 1
            return []
        if isinstance(ev, AgentCancel):
            self.counts["cancels"] += 1
            self.min_gen = max(self.min_gen, ev.gen)
            self._drop(lambda g: g < ev.gen)
            return []
        self.due_ns = now_ns
        if isinstance(ev, AgentSay):
            self.counts["says"] += 1
            self._queue(ev.turn, ev.gen, ev.chunk, ev.text, said_ns=now_ns)
        elif isinstance(ev, AgentPause):
            self.counts["pauses"] += 1
        elif isinstance(ev, AgentPrerender):
            self.counts["prerenders"] += 1
            self._drop_cache()
            self.cache = Cache(ev.gen, [Entry(t, self._split(t)) for t in ev.chunks])
        elif isinstance(ev, AgentRelease):
            return self._release(ev)
        return []

    def _split(self, text: str) -> list[Piece]:
        return split(text, self.engine.text_style, self.cfg.max_chars, silences=self.engine.handles_pauses)

    def _queue(self, turn: int, gen: int, chunk: int, text: str, said_ns: int | None) -> None:
        parts = self._split(text)
        if not parts:
            self.counts["empty"] += 1
            return
        self.jobs.append(Job(turn, gen, chunk, collections.deque(parts), said_ns))

    def _release(self, ev: AgentRelease) -> list[Event]:
        if ev.n_chunks < 1:
            raise ValueError(f"agent.release: n_chunks must be >= 1, got {ev.n_chunks}")
        entries = self._cached(ev)
        if entries is None:
            self.counts["releases_rendered"] += 1
            self._drop_cache()
            for i, group in enumerate(word_groups(ev.text, ev.n_chunks)):
                self._queue(ev.turn, ev.gen, ev.chunk + i, group, said_ns=None)
            return []
        self.counts["releases_cached"] += 1
        out: list[Event] = []
        at_once = not self.jobs  # nothing queued ahead: out now, rendering what is missing
        for i, entry in enumerate(entries):
            if not entry.parts:
                self.counts["empty"] += 1
                continue
            job = Job(ev.turn, ev.gen, ev.chunk + i, collections.deque(entry.parts))
            if at_once:
                while job.parts:
                    out += self._step(job)
            else:
                self.jobs.append(job)
        return out

    def _cached(self, ev: AgentRelease) -> list[Entry] | None:
        """The first n cache entries if they hold exactly the release's words, else None."""
        cache = self.cache
        if cache is None or cache.gen < ev.gen or len(cache.entries) < ev.n_chunks:
            return None
        entries = cache.entries[: ev.n_chunks]
        joined = "".join(e.text for e in entries)
        wanted = normalise(ev.text)
        if wanted not in (normalise(joined), normalise(_UNFINISHED_PAUSE.sub("", joined))):
            return None
        cache.entries = cache.entries[ev.n_chunks :]
        return entries

    def _configure(self, changes: dict) -> None:
        """Apply the tts.* keys that can change live; a bad value raises and changes nothing."""
        ours = {k: v for k, v in changes.items() if k.startswith("tts.")}
        fixed = sorted(set(ours) - set(LIVE_KEYS))
        if fixed:
            raise ValueError(f"ctl.config: {', '.join(fixed)} cannot change while the node runs "
                             f"(restart it); live keys: {', '.join(LIVE_KEYS)}")
        cfg = self.cfg
        if "tts.max_chars" in ours:
            cfg = dataclasses.replace(cfg, max_chars=ours["tts.max_chars"])  # validates
        if "tts.voice" in ours:
            voice = ours["tts.voice"]
            if not isinstance(voice, str):
                raise ValueError(f"tts.voice: got {voice!r}; allowed: a voice name (string)")
            self.engine.set_voice(voice)  # ValueError naming the allowed voices; nothing changed
            cfg = dataclasses.replace(cfg, voice=voice)
        self.cfg = cfg

    def _drop(self, stale: Callable[[int], bool]) -> None:
        before = len(self.jobs)
        self.jobs = collections.deque(j for j in self.jobs if not stale(j.gen))
        self.counts["dropped"] += before - len(self.jobs)
        if self.cache is not None and stale(self.cache.gen):
            self._drop_cache()

    def _drop_cache(self) -> None:
        if self.cache is not None:
            self.counts["dropped"] += len(self.cache.entries)
            self.cache = None

    # ---------------------------------------------------------------- rendering

    def deadline_ns(self) -> int | None:
        if self.jobs or self._cache_work() is not None:
            return self.due_ns
        return None

    def on_tick(self, now_ns: int) -> list[Event]:
        """Render one piece: of the oldest job, else of the cache."""
        if self.jobs:
            job = self.jobs[0]
            started = self.timer()
            out = self._step(job)
            if job.said_ns is not None and job.emitted == 1 and out:
                self.ttfa_ns = now_ns - job.said_ns + self.timer() - started
            return out
        work = self._cache_work()
        if work is not None:
            entry, i = work
            piece = entry.parts[i]
            try:
                entry.parts[i] = self._render(piece)
            except Exception as exc:  # the engine failed: this chunk will be rendered on release
                self._drop_cache()
                return [self._engine_error(exc, piece)]
        return []

    def _cache_work(self) -> tuple[Entry, int] | None:
        if self.cache is None:
            return None
        for entry in self.cache.entries:
            i = entry.pending()
            if i is not None:
                return entry, i
        return None

    def _step(self, job: Job) -> list[Event]:
        """Send the job's next part (rendering it first); pop the job when it is done."""
        part = job.parts.popleft()
        try:
            rendered = self._render(part)
        except Exception as exc:  # the engine failed: drop the rest of this chunk, keep the node
            job.parts.clear()
            if job in self.jobs:
                self.jobs.remove(job)
            out: list[Event] = [self._engine_error(exc, part)]
            if job.emitted:  # close the chunk so the audio node can report it
                out.append(self._audio(job, Rendered("", np.zeros(0, dtype=np.int16)), last=True))
            return out
        last = not job.parts
        if last and job in self.jobs:
            self.jobs.remove(job)
        if not len(rendered.pcm) and (not last or not job.emitted):  # the engine said nothing here
            self.counts["empty"] += last
            return []
        return [self._audio(job, rendered, last=last)]

    def _audio(self, job: Job, part: Rendered, last: bool) -> TtsAudio:
        job.emitted += 1
        self.counts["pieces"] += 1
        return TtsAudio(
            turn=job.turn, gen=job.gen, chunk=job.chunk, text=part.text, pcm=part.pcm.tobytes(),
            sr_hz=self.engine.sample_rate, n_samples=len(part.pcm), last=last,
        )

    def _render(self, part: Part) -> Rendered:
        if isinstance(part, Rendered):
            return part
        if isinstance(part, Silence):
            return Rendered("", np.zeros(round(part.seconds * self.engine.sample_rate), dtype=np.int16))
        started = self.timer()
        arrays = [np.asarray(a, dtype=np.int16) for a in self.engine.synthesize(part.text)]
        pcm = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int16)
        pcm = pcm[lead_in(pcm, self.engine.sample_rate) :]
        self.render_ns += self.timer() - started
        self.audio_samples += len(pcm)
        return Rendered(part.text, pcm)

    def _engine_error(self, exc: Exception, part: Part) -> NodeError:
        self.counts["engine_errors"] += 1
        text = part.text if isinstance(part, Speech | Rendered) else ""
        log.warning("%s failed on %r: %s", self.engine.name, text, exc)
        return NodeError(node=self.name, kind="handler", count=self.counts["engine_errors"],
                         detail=f"{self.engine.name} failed on {text[:80]!r}: {type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counts)
        out["queued_jobs"] = len(self.jobs)
        out["cached_chunks"] = len(self.cache.entries) if self.cache else 0
        if self.ttfa_ns is not None:
            out["ttfa_ms_last"] = self.ttfa_ns / 1e6
        audio_s = self.audio_samples / self.engine.sample_rate
        if audio_s > 0:
            out["rtf"] = self.render_ns / 1e9 / audio_s
        return out
