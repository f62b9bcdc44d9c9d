"""``--under-load``: competing processes beside a benchmark, as in a live session where the
recogniser, the agent and the TTS share the cores. ``AgentLoad`` is the agent's decoding loop
(beside ``bench asr``); ``SessionLoad`` is the recogniser's calls at its hop rate and the voice's
syntheses (beside ``bench agent``).

``AgentLoad(profile, overrides)`` is a context manager. It starts a spawned process that loads
the agent's model as the agent node does (the profile's ``agent`` section: model, adapter,
dtype, threads) and runs decision cycles back to back until the block ends: ``bench agent``'s
cycle (a 400-word transcript growing by two words or a pause at a time, 7 new tokens each).
Entering returns once the model is loaded and a first cycle has run, so the benchmark is under
load from its first call; ``cycles`` is how many cycles ran (a load that ran nothing measured
nothing: ``UnderLoadError``). A child that dies raises ``UnderLoadError`` naming its exit code.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0  # loading the model (and merging the adapter) on a busy machine


class UnderLoadError(RuntimeError):
    """The competing process could not start, died, or ran no cycle."""


def _agent_cycles(profile: str, overrides: Sequence[str], ready, stop, cycles) -> None:
    from rtchat.configs import load
    from rtchat.evals.bench_agent import MAX_NEW_TOKENS, cycle_texts, transcript
    from rtchat.nodes.agent.lm import load_lm

    lm = load_lm(load(profile, list(overrides)).agent)
    texts = cycle_texts(transcript(400), 40)
    i = 0
    while not stop.is_set():
        lm.generate(texts[i % len(texts)], MAX_NEW_TOKENS)
        with cycles.get_lock():
            cycles.value += 1
        ready.set()
        i += 1


SPEECH = ("the farmer repaired the long letter in the evening and then we went to see the old bridge "
          "in the middle of town which was really beautiful")
REPLY = "oh nice, that sounds lovely. did you do a lot of hiking while you were there?"
ASR_WINDOW_S = 3.0  # the audio one recogniser call hears (an utterance's buffer)
REPLY_EVERY_S = 3.0  # one reply synthesised this often


def _paced(stop, cycles, ready, period_s: float, work, clock=time.monotonic) -> None:
    """Run ``work()`` every ``period_s`` until ``stop`` is set, counting in ``cycles`` and setting
    ``ready`` after each. Behind schedule it runs at once, but catches up at most one period of
    backlog (a stalled recogniser does not then make a burst of calls)."""
    due = clock()
    while not stop.is_set():
        work()
        with cycles.get_lock():
            cycles.value += 1
        ready.set()
        due = max(due + period_s, clock() - period_s)
        stop.wait(max(0.0, due - clock()))


def _asr_calls(profile: str, overrides: Sequence[str], ready, stop, cycles) -> None:
    """The live recogniser's duty: one call on a 3 s utterance buffer every ``asr.hop_s``."""
    import numpy as np

    from rtchat.common.audio import SR_HZ
    from rtchat.configs import load
    from rtchat.evals.simulate_user import engine_synth
    from rtchat.nodes.asr.backends import load_transcriber
    from rtchat.nodes.asr.frames import resample

    cfg = load(profile, list(overrides)).asr
    transcribe = load_transcriber(cfg)
    pcm, sr = engine_synth("espeak")(SPEECH)
    audio = resample(pcm.astype(np.float32) / 32768, sr, SR_HZ)[: round(ASR_WINDOW_S * SR_HZ)]
    _paced(stop, cycles, ready, cfg.hop_s, lambda: transcribe(audio, ""))


def _tts_replies(profile: str, overrides: Sequence[str], ready, stop, cycles) -> None:
    """The voice's duty: the profile's TTS engine synthesises a reply every 3 s."""
    from rtchat.configs import load
    from rtchat.nodes.tts.engines import load_engine

    engine = load_engine(load(profile, list(overrides)).tts)
    _paced(stop, cycles, ready, REPLY_EVERY_S, lambda: list(engine.synthesize(REPLY)))


class AgentLoad:
    """The agent's decoding loop in another process for the duration of a ``with`` block
    (``target``: another loop, e.g. ``_asr_calls``; ``name``: what it is called in errors)."""

    def __init__(self, profile: str = "cpu", overrides: Sequence[str] = (), target=_agent_cycles,
                 name: str = "the agent's decoding loop"):
        self.name = name
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding model threads
        self._ready, self._stop, self._cycles = ctx.Event(), ctx.Event(), ctx.Value("l", 0)
        self._proc = ctx.Process(target=target, args=(profile, tuple(overrides), self._ready, self._stop, self._cycles),
                                 name="rtchat-agent-load", daemon=True)

    @property
    def cycles(self) -> int:
        return self._cycles.value

    def __enter__(self) -> AgentLoad:
        self._proc.start()
        deadline = READY_TIMEOUT_S
        while not self._ready.wait(min(deadline, 1.0)):
            deadline -= 1.0
            if not self._proc.is_alive():
                raise UnderLoadError(f"{self.name} exited with code {self._proc.exitcode} before its first cycle")
            if deadline <= 0:
                self._end()
                raise UnderLoadError(f"{self.name} ran no cycle within {READY_TIMEOUT_S:.0f} s")
        log.info("under load: %s runs (pid %d)", self.name, self._proc.pid)
        return self

    def __exit__(self, *exc) -> None:
        alive = self._proc.is_alive()
        self._end()
        if exc[0] is None and not alive:
            raise UnderLoadError(f"{self.name} died during the benchmark (exit code {self._proc.exitcode})")

    def _end(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


class SessionLoad:
    """What else runs in a live session, each in its own process for a ``with`` block: the
    recogniser's calls at its hop rate (``_asr_calls``) and the voice's syntheses
    (``_tts_replies``). ``counts``: {"asr_calls": …, "tts_replies": …}."""

    def __init__(self, profile: str = "cpu", overrides: Sequence[str] = (), targets=None):
        targets = targets or {"asr_calls": _asr_calls, "tts_replies": _tts_replies}
        names = {"asr_calls": "the recogniser's calls", "tts_replies": "the voice's syntheses"}
        self.loads = {key: AgentLoad(profile, overrides, target, names.get(key, key)) for key, target in targets.items()}

    @property
    def counts(self) -> dict[str, int]:
        return {key: load.cycles for key, load in self.loads.items()}

    def __enter__(self) -> SessionLoad:
        entered = []
        try:
            for load in self.loads.values():
                entered.append(load.__enter__())
        except BaseException:
            for load in entered:
                load._end()
            raise
        return self

    def __exit__(self, *exc) -> None:
        errors = []
        for load in self.loads.values():
            try:
                load.__exit__(*exc)
            except UnderLoadError as e:
                errors.append(e)
        if errors:
            raise errors[0]
