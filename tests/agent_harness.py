"""The agent test harness: scripted and chaotic models, a fake audio sink and ``Timeline``, which
drives an ``AgentCore`` on virtual time (STYLE §5). Used by test_agent_core.py and
test_agent_resume.py.

- ``ScriptedModel`` answers from a script keyed by the end of the transcript; ``ChaosModel``
  answers anything (malformed tags, endless or unfinished pauses, empty text, emoji).
- ``Timeline`` drives a core: scheduled inputs, ticks at ``deadline_ns()``, and a ``FakeAudio``
  that plays the agent's chunks at a fixed speed and reports ``audio.played``.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import re
import zlib

import numpy as np

from rtchat.bus.clock import s
from rtchat.bus.events import (
    AgentCancel,
    AgentCycle,
    AgentPause,
    AgentPrerender,
    AgentRelease,
    AgentSay,
    AgentSchedule,
    AgentState,
    AsrFinal,
    AsrPartial,
    AudioPlayed,
    UserText,
)
from rtchat.configs.schema import AgentConfig
from rtchat.nodes.agent.core import AgentCore
from rtchat.nodes.agent.protocol import Generation, Lookahead
from rtchat.nodes.agent.transcript import PAUSE_RE, parse_turn

FOLLOW_UP_TICKS = 2  # ticks a tick may leave due at once: a schedule plan and a lookahead renewal

# ---------------------------------------------------------------- models


def bag_of_words(text: str) -> np.ndarray | None:
    """A deterministic stand-in for a hidden state: hashed words, pauses left out."""
    words = re.findall(r"[\w']+", PAUSE_RE.sub(" ", text).lower())
    if not text.strip():
        return None
    v = np.zeros(64)
    for w in words or ["<silence>"]:
        v[zlib.crc32(w.encode()) % 64] += 1
    return v


def settled_prefix(text: str, done) -> str:
    """What a model that stops once ``done`` accepts what it wrote gives: the shortest prefix
    that done accepts, a character at a time (finer than any tokenizer), else all of it."""
    if done is not None:
        for i in range(1, len(text)):
            if done(text[:i]):
                return text[:i]
    return text


class ScriptedModel:
    """A LanguageModel answering from a script: each call takes the first rule whose regex is found
    in the transcript; an answer list is used in turn and its last answer repeats.

    generate: [(regex, text | [texts])]; lookahead: [(regex, (completion, response))];
    switch: [(regex, bool)] for next_speaker_prob (1.0 / 0.0; see there). Unmatched calls get the defaults."""

    def __init__(self, generate=(), lookahead=(), switch=(), default_generate=" (0.2)", default_lookahead=("", "")):
        self.rules = {"generate": list(generate), "lookahead": list(lookahead), "switch": list(switch)}
        self.defaults = {"generate": default_generate, "lookahead": default_lookahead, "switch": False}
        self.used: dict[int, int] = {}
        self.calls: list[tuple[str, str]] = []

    def _answer(self, kind: str, text: str):
        self.calls.append((kind, text))
        for pattern, answer in self.rules[kind]:
            if re.search(pattern, text):
                if isinstance(answer, list):
                    n = self.used[id(answer)] = self.used.get(id(answer), -1) + 1
                    return answer[min(n, len(answer) - 1)]
                return answer
        return self.defaults[kind]

    def generate(self, text, max_new_tokens, done=None):
        tag = re.search(r" (S\d+:)$", text)
        if tag and self._peek("generate", text) is None:
            # the words after a tag the core wrote: the scripted answer for the text before it,
            # from after that tag (as a model continues what it was given)
            answer = self._answer("generate", text[: tag.start()])
            speaker, words = parse_turn(answer)
            if speaker == tag.group(1)[:-1]:
                answer = words
        else:
            answer = self._answer("generate", text)
        out = settled_prefix(answer, done)
        return Generation(text=out, n_tokens=len(out.split()))

    def lookahead(self, text, max_new_tokens, max_response_tokens, abort=None):
        completion, response = self._answer("lookahead", text)
        if abort is not None and abort():  # asked after the first token, as the real model asks
            return None
        return Lookahead(completion, response, len(completion.split()), bag_of_words(completion) if completion else None)

    def embed_continuation(self, context, continuation):
        self.calls.append(("embed", continuation))
        return bag_of_words(continuation)

    def next_speaker_prob(self, text, tag):
        """A switch rule decides where one matches; else 1.0 where the scripted generation (lookahead
        off) or lookahead (completion "", reply after the tag) has the tag come next, else 0.0."""
        for pattern, answer in self.rules["switch"]:
            if re.search(pattern, text):
                self.calls.append(("switch", text))
                return float(answer)
        self.calls.append(("switch", text))
        look = self._peek("lookahead", text)
        if look is not None:
            completion, response = look
            return float(not completion.strip() and parse_turn(response)[0] == tag.strip()[:-1])
        answer = self._peek("generate", text)
        return float(parse_turn(self.defaults["generate"] if answer is None else answer)[0] == tag.strip()[:-1])

    def next_speaker_probs(self, texts, tag):
        self.calls.append(("schedule", texts[0]))
        return [self.next_speaker_prob(text, tag) for text in texts]

    def _peek(self, kind: str, text: str):
        """The answer the next call of this kind would get, without using it up; None: no rule matches."""
        for pattern, answer in self.rules[kind]:
            if re.search(pattern, text):
                if isinstance(answer, list):
                    return answer[min(self.used.get(id(answer), -1) + 1, len(answer) - 1)]
                return answer
        return None

    def split_tokens(self, text, n):
        words = text.split()
        return [" " + " ".join(words[i : i + n]) for i in range(0, len(words), n)]

    def timings_ns(self):
        return {"model": 1000}

    def forwards(self):
        return {"model": 1}

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _ in self.calls)


class ChaosModel(ScriptedModel):
    """Any model at all: seeded answers drawn from well-formed and malformed pieces."""

    PIECES = [
        " yes",
        " I think",
        " S2:",
        " S2: sure",
        " S1:",
        " S1: no",
        " S3: who",
        " S",
        " S2",
        "S2:hi",
        " (0.4)",
        " (99999.9)",
        " (.)",
        " (0.",
        " <p> (1.2)",
        "",
        " ",
        "\n",
        " 🙂",
        " naïve",
        " (..)",
        "'t",
        " S12:",
    ]

    ignore_done = False

    def __init__(self, seed: int):
        super().__init__()
        self.rng = random.Random(seed)

    def _text(self) -> str:
        return "".join(self.rng.choice(self.PIECES) for _ in range(self.rng.randint(0, 4)))

    def generate(self, text, max_new_tokens, done=None):
        out = self._text()
        return Generation(out if self.ignore_done else settled_prefix(out, done), len(out.split()))

    def lookahead(self, text, max_new_tokens, max_response_tokens, abort=None):
        completion = "" if self.rng.random() < 0.3 else self._text()
        response = self.rng.choice(["", " S2:", " S1:"]) + self._text()
        emb = np.array([self.rng.random() for _ in range(8)]) if completion and self.rng.random() < 0.8 else None
        return Lookahead(completion, response, len(completion.split()), emb)

    def embed_continuation(self, context, continuation):
        return np.array([self.rng.random() for _ in range(8)]) if self.rng.random() < 0.9 else None

    def next_speaker_prob(self, text, tag):
        return self.rng.random()

    def next_speaker_probs(self, texts, tag):
        return [self.rng.random() for _ in texts]


# ---------------------------------------------------------------- the timeline driver


class FakeAudio:
    """Plays agent chunks in order at seconds_per_word (pauses as their silence); reports each
    chunk's audio.played when it ends; agent.cancel drops what has not finished."""

    def __init__(self, seconds_per_word: float = 0.25):
        self.per_word_ns = s(seconds_per_word)
        self.free_ns = 0

    def schedule(self, t: int, ev) -> list[tuple[int, AudioPlayed]]:
        if isinstance(ev, AgentPause):
            self.free_ns = max(self.free_ns, t) + ev.duration_ns
            return []
        if not isinstance(ev, AgentSay | AgentRelease):
            return []
        n = ev.n_chunks if isinstance(ev, AgentRelease) else 1
        words = PAUSE_RE.sub(" ", ev.text).split()
        silence = sum(int(float(v) * 1e9) for v in re.findall(r"\((\d+\.\d)\)", ev.text))
        start = max(self.free_ns, t)
        self.free_ns = start + len(words) * self.per_word_ns + silence
        out, per = [], max(1, -(-len(words) // n))
        for i in range(n):
            end = start + (self.free_ns - start) * (i + 1) // n
            text = " ".join(words[i * per : (i + 1) * per])
            played = dict(turn=ev.turn, gen=ev.gen, chunk=ev.chunk + i, text=text, start_ns=start, end_ns=end)
            out.append((end, AudioPlayed(**played, stream_pos=0, n_samples=0, sr_hz=16000)))
        return out


@dataclasses.dataclass
class Step:
    t: int
    given: object  # the input event, or None for a tick
    out: list
    floor_before: str
    floor_after: str


class Timeline:
    """Drives a core on virtual time: inputs at their times (before a tick due at the same time),
    ticks at the core's deadline, fake audio reports. ``story()`` renders what happened."""

    def __init__(self, core: AgentCore, audio: FakeAudio | None = None):
        self.core, self.audio = core, audio
        self.now = 0
        self.queue: list[tuple[int, int, object]] = []
        self.seq = itertools.count()
        self.steps: list[Step] = []

    def at(self, t_s: float, ev) -> Timeline:
        heapq.heappush(self.queue, (s(t_s), next(self.seq), ev))
        return self

    def user(self, words: str, start_s: float, end_s: float, final_s: float | None, utterance: int = 0) -> Timeline:
        """Partials every 0.5 s while the user speaks start–end (words in proportion), then a final."""
        w = words.split()
        t = start_s + 0.5
        while t <= end_s + 1e-9:
            k = -(-len(w) * round((t - start_s) * 1000) // round((end_s - start_s) * 1000))
            self.at(t, AsrPartial(text=" ".join(w[:k]), rev=0, utterance=utterance))
            t += 0.5
        if final_s is not None:
            self.at(final_s, AsrFinal(text=words, utterance=utterance))
        return self

    def run(self, until_s: float) -> Timeline:
        until = s(until_s)
        stalled = 0
        for _ in range(100_000):
            deadline = self.core.deadline_ns()
            t_in = self.queue[0][0] if self.queue else until + 1
            t = max(min(t_in, deadline), self.now)  # a deadline already past is served now, as the node does
            if t > until:
                self.now = until
                return self
            before = self.core.floor
            if t_in <= deadline:
                _, _, ev = heapq.heappop(self.queue)
                out = self.core.on_event(ev, t)
            else:
                ev, out = None, self.core.on_tick(t)
                # a decision may leave more ticks due at once — a schedule plan, then a lookahead
                # renewal (schedule.py, cycle.py) — never more than FOLLOW_UP_TICKS in a row
                again = self.core.deadline_ns() <= t
                stalled = (stalled + 1 if again and self.now == t else 1) if again else 0
                assert stalled <= FOLLOW_UP_TICKS, f"{stalled} ticks in a row left the core due at once (no progress)"
            self.now = t
            self.steps.append(Step(t, ev, out, before, self.core.floor))
            self._audio(t, out)
        raise AssertionError("the timeline did not reach its end")

    def _audio(self, t: int, out: list) -> None:
        if self.audio is None:
            return
        for ev in out:
            if isinstance(ev, AgentCancel):
                self.queue = [q for q in self.queue if not (isinstance(q[2], AudioPlayed) and q[2].gen < ev.gen)]
                heapq.heapify(self.queue)
                self.audio.free_ns = t
            for t_end, played in self.audio.schedule(t, ev):
                heapq.heappush(self.queue, (t_end, next(self.seq), played))

    @property
    def events(self) -> list[tuple[int, object]]:
        return [(st.t, ev) for st in self.steps for ev in st.out]

    def story(self, *kinds: str) -> list[str]:
        """Lines such as ``3.2 say " I'm good."``; kinds: in, played, say, release, prerender,
        pause, cancel, cycle (decisions other than listen), listen, schedule, state."""
        lines = []
        for st in self.steps:
            if st.given is not None:
                lines.append((st.t, render(st.t, st.given)))
            lines += [(st.t, render(st.t, ev)) for ev in st.out]
        return [line for _, line in lines if line.split(" ", 2)[1] in kinds]

    def state_at(self, t_s: float) -> str:
        """The transcript body at time t (after everything due then)."""
        body = self.core.t.text.split("Transcript:", 1)[1] if not self.steps else None
        for st in self.steps:
            if st.t > s(t_s):
                break
            for ev in st.out:
                if isinstance(ev, AgentState):
                    body = ev.sequence.split("Transcript:", 1)[1]
        return body


def render(t: int, ev) -> str:
    ts = f"{t / 1e9:g}"
    match ev:
        case AsrPartial():
            return f"{ts} in partial {ev.text!r}"
        case AsrFinal() | UserText():
            return f"{ts} in final {ev.text!r}"
        case AudioPlayed():
            return f"{ts} played {ev.chunk} {ev.text!r}"
        case AgentSay():
            return f"{ts} say {ev.text!r}"
        case AgentRelease():
            return f"{ts} release {ev.n_chunks} {ev.text!r}"
        case AgentPrerender():
            return f"{ts} prerender {list(ev.chunks)!r}"
        case AgentPause():
            return f"{ts} pause {ev.duration_ns / 1e9:g}"
        case AgentCancel():
            return f"{ts} cancel gen={ev.gen}"
        case AgentCycle():
            return f"{ts} {'listen' if ev.decision == 'listen' else 'cycle'} {ev.decision}"
        case AgentSchedule():
            fire = "none" if ev.fire_after_ns < 0 else f"{ev.fire_after_ns / 1e9:g}"
            return f"{ts} schedule {ev.action} {fire}"
        case AgentState():
            return f"{ts} state {ev.floor}:{ev.sequence.split('Transcript:', 1)[1]}"
    return f"{ts} other {type(ev).__name__}"


def agent(model, **overrides) -> AgentCore:
    """A core on the scenarios' 0.4 s listening grid (their stories were written on it; the
    default decides every pause step, 0.1 s) and saying a reply generated at the switch up to
    its first pause in one chunk (the default says its first word, then the rest: tested on its
    own) unless overridden."""
    return AgentCore(dataclasses.replace(AgentConfig(), **{"listen_interval_s": 0.4, "first_chunk_words": 0, **overrides}),
                     model, 0)


def answering_model(**extra) -> ScriptedModel:
    """Answers "how are you" after half a second of silence, then keeps talking, then pauses."""
    rules = extra.pop("generate", []) + [
        (r"you \(0\.[5-9]\)$", " S2: I'm good, thanks. S1:"),
        (r"thanks\.$", " And how was your day today? S1:"),
        (r"today\?$", " S1: it was"),
    ]
    return ScriptedModel(generate=rules, **extra)
