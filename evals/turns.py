"""``rtchat eval turns --json OUT [--quick]``: four turn-taking policies on the same user recordings.

The scripted users of ``rtchat bench session`` (questions, statements, hesitations mid-sentence,
a trailing-off fragment, backchannel-sized utterances) are rendered by ``simulate-user``; the
script gives the truth: each line is one user turn, each ``[pause]`` inside a line a hesitation
after which the same user goes on. Four policies decide when the agent takes the turn:

- ``learned``: the agent itself (the embedded model reading the timed transcript), in full
  real-time sessions (``rtchat run --ui none --in USER.wav``); a decision is the agent output
  (``agent.say``/``agent.release`` with words) that opens an agent turn after user speech. While
  it listens, every ``agent.cycle`` records the probability it decided on, P(the agent's tag
  comes next) (``prediction`` "P(S2:)=0.738"; it takes the turn at ``agent.switch_threshold``).
- ``silence_700ms``: the common voice-agent endpointer: Silero VAD, the turn ends after 700 ms
  of silence (decided at that moment).
- ``smart_turn_v3.2``: pipecat's Smart Turn v3.2 end-of-turn model (ONNX, BSD-2, loaded from the
  ``pipecat-ai`` wheel's files without importing pipecat), run as pipecat runs it: when the VAD
  sees 200 ms of silence, the model scores the current turn's audio — 16 kHz, from 0.5 s before
  the turn's first speech up to that moment, its last 8 s (zero-padded in front when shorter);
  complete (p > 0.5) → the turn ends then (plus the model's measured inference time); otherwise
  the policy waits for more speech or for 3 s of silence after the speech (the fallback).
- ``hybrid``: Smart Turn gating the learned policy, from the same sessions (no session of its
  own): each ``learned`` decision counts only if Smart Turn, on the turn's audio up to that
  moment (as above; the turn is the speech since the hybrid's last decision), says complete (the
  decision then comes the model's measured inference time later); a vetoed one leaves the turn
  to Smart Turn's fallback, 3 s of silence after the speech — the way pipecat composes a VAD, a
  turn model and a timeout, with the learned policy in the VAD's place.

The endpointers run offline on the recordings (Silero and the model on the same 16 kHz audio,
time simulated exactly). All times are audio times of the user's recording.

Keys per policy:
- ``fto_p50_ms`` / ``fto_p90_ms``: for each user turn, the first decision after the turn's last
  utterance began, minus the turn's end (negative: the policy took the turn while the user was
  still speaking); the time the policy hands the turn over, not the agent's first sound
  (``learned`` also reports ``sound_fto_p50_ms``, its first sound from the same sessions);
- ``shift_latency_mean_ms``: the mean of those offsets (a shift: the floor passes to the agent);
- ``hold_latency_mean_ms``: the mean length of the script's hesitations the policy listened
  through (no decision inside them: a hold, the user keeps the floor) — how long it waited in the
  pauses it correctly did not take; None where it took every one (eot-bench defines no hold
  latency; this is the silence the user was given);
- ``false_cutin_rate``: share of decisions after which the user resumes speaking within 1 s;
- ``missed_rate``: share of user turns with no decision before the next turn begins (the last
  turn: within 5 s);
- ``smart_turn_fallback_rate`` (``smart_turn_v3.2``, ``hybrid``): share of the policy's decisions
  that came from the 3 s fallback, not from the model;
- ``false_cutin_rate_at_300ms`` / ``_500ms`` / ``_700ms``: eot-bench's "false cut-offs at a
  latency budget" (livekit/eot-bench, ``eot_harness/metrics.py``), on the script's pauses: each
  hesitation of 0.2-5 s is a hold, each turn's end (until the next turn, or the recording's end) a
  shift (eot-bench annotates every silence of 100 ms or more; the silences inside a rendered line
  are not counted here). A policy's scores P(end of turn) arrive causally during a pause
  (``learned``: its listening cycles' probabilities, a cycle at most every 100 ms; ``smart_turn_v3.2``: one score 200 ms into the
  pause, on the turn's audio up to then, as eot-bench scores it; ``hybrid``: the learned
  probabilities where Smart Turn, on the audio up to each, says complete, else 0;
  ``silence_700ms``: no score, its delay is its only knob — eot-bench's VAD baseline). A setting
  (threshold θ of 0-1 by 0.01, action delay a of 0.2-1.0 s by 0.1, timeout T of 1.0-3.5 s by 0.5)
  fires at max(a, the first score > θ), else at T. A hold is cut off when it lasts longer than
  that; a shift's latency is the firing time, T when the model did not fire by then. The key is
  the lowest cut-off rate over the holds among the settings whose mean shift latency is within
  the budget; None ("–" in eot-bench) when no setting is. ``budget_operating_points`` gives the
  chosen setting, its mean latency and its ``timeout_rate`` (share of shifts the timeout took).
  As in eot-bench a score counts only while the silence lasts: a decision that lands after the
  user went on is no cut-off here (``false_cutin_rate`` and a negative offset show those). The
  learned probabilities are stamped when the agent computed them in its real-time session (the
  recogniser's delay included) and stop once it speaks, so a threshold above the one it switched
  at finds no crossing after that (its timeout); ``budget_pauses`` counts the holds and shifts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np

from rtchat.common.audio import SR_HZ
from rtchat.common.stats import percentile

log = logging.getLogger(__name__)

RESUME_S = 1.0  # the user speaking again this soon after a decision makes it a false cut-in
LAST_TURN_WAIT_S = 5.0
SMART_TURN_FILE = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SMART_TURN_FEATURES = "audio/turn/smart_turn/_whisper_features.py"
PIPECAT = "pipecat-ai==1.14.0"
PRE_SPEECH_S = 0.5  # pipecat's pre_speech_ms: Smart Turn hears the turn from this long before its first speech
SMART_TURN_S = 8  # Smart Turn hears at most the last 8 s
SMART_TURN_STOP_S = 0.2  # pipecat's VAD stop: Smart Turn scores after this much silence
FALLBACK_S = 3.0  # pipecat's stop_secs: silence that ends the turn whatever the model said
COMPLETE = 0.5  # Smart Turn says complete above this

# eot-bench's policy sweep (livekit/eot-bench eot_harness/metrics.py): its grids and hold-span filter
BUDGETS_MS = (300, 500, 700)
THRESHOLDS = tuple(k / 100 for k in range(101))  # 0.00 … 1.00
ACTION_DELAYS_S = tuple(k / 10 for k in range(2, 11))  # 0.2 … 1.0
TIMEOUTS_S = tuple(k / 2 for k in range(2, 8))  # 1.0 … 3.5
HOLD_MIN_S, HOLD_MAX_S = 0.2, 5.0  # hesitations outside this are not scored
EPS = 1e-9

POLICIES = ("learned", "silence_700ms", "smart_turn_v3.2", "hybrid")
SHOWN = ("fto_p50_ms", "shift_latency_mean_ms", "hold_latency_mean_ms", "false_cutin_rate",
         *(f"false_cutin_rate_at_{b}ms" for b in BUDGETS_MS), "missed_rate", "smart_turn_fallback_rate")  # printed


class TurnsError(RuntimeError):
    """A policy cannot run (a missing model file); the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class Turn:
    start_s: float
    last_start_s: float  # the turn's last utterance began here
    end_s: float


def turns_of(segments: list[list], per_turn: list[int]) -> list[Turn]:
    """Script truth: utterance segments [start, end, text] grouped by script line."""
    out, i = [], 0
    for n in per_turn:
        seg = segments[i:i + n]
        out.append(Turn(seg[0][0], seg[-1][0], seg[-1][1]))
        i += n
    return out


def hesitations(turns: list[Turn], segments: list[list]) -> list[tuple[float, float]]:
    """Script truth: (start, end) of the silences inside a turn (the same user goes on after)."""
    turn_starts = {t.start_s for t in turns}
    return [(a[1], b[0]) for a, b in pairwise(segments) if b[0] not in turn_starts]


def _mean_ms(values_s: list[float]) -> float | None:
    return round(1000 * sum(values_s) / len(values_s), 1) if values_s else None


def score(decisions: list[float], turns: list[Turn], segments: list[list]) -> dict:
    """The policy's figures against the script (module doc)."""
    fto, missed = [], 0
    for k, t in enumerate(turns):
        until = turns[k + 1].start_s if k + 1 < len(turns) else t.end_s + LAST_TURN_WAIT_S
        d = next((d for d in sorted(decisions) if t.last_start_s <= d < until), None)
        if d is None:
            missed += 1
        else:
            fto.append(round((d - t.end_s) * 1000, 1))
    starts = [s[0] for s in segments]
    cutins = sum(any(d < s <= d + RESUME_S for s in starts) for d in decisions)
    held = [round(b - a, 3) for a, b in hesitations(turns, segments) if not any(a <= d < b for d in decisions)]
    return {
        "fto_p50_ms": percentile(fto, 0.5),
        "fto_p90_ms": percentile(fto, 0.9),
        "shift_latency_mean_ms": _mean_ms([f / 1000 for f in fto]),
        "hold_latency_mean_ms": _mean_ms(held),
        "false_cutin_rate": round(cutins / len(decisions), 3) if decisions else 0.0,
        "missed_rate": round(missed / len(turns), 3) if turns else 0.0,
        "fto_ms": fto,
        "held_s": held,
        "decisions": len(decisions),
        "false_cutins": cutins,
        "missed": missed,
    }


# ---------------------------------------------------------------- eot-bench's budget metric

Scores = list[tuple[float, float]]  # (s into a pause, P(end of turn)) in the order they arrived


@dataclasses.dataclass(frozen=True)
class Pause:
    """A silence the policies decide in (script truth)."""

    start_s: float
    dur_s: float
    shift: bool  # the turn's end; else a hesitation the same user goes on after (a hold)
    turn_start_s: float  # the turn's first speech


def pauses_of(segments: list[list], per_turn: list[int], audio_end_s: float) -> list[Pause]:
    """Each hesitation inside a turn, and each turn's end up to the next turn (or the recording's end)."""
    out, i = [], 0
    for n in per_turn:
        seg, i = segments[i:i + n], i + n
        first = seg[0][0]
        out += [Pause(a[1], round(b[0] - a[1], 3), False, first) for a, b in pairwise(seg)]
        nxt = segments[i][0] if i < len(segments) else audio_end_s
        out.append(Pause(seg[-1][1], round(nxt - seg[-1][1], 3), True, first))
    return out


def in_pause(samples: list[tuple[float, float]], pause: Pause) -> Scores:
    """The (audio time, p) samples that arrived during the pause, as (s into it, p)."""
    return [(round(t - pause.start_s, 3), p) for t, p in samples if pause.start_s <= t < pause.start_s + pause.dur_s]


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    action_delay_s: float
    timeout_s: float
    cutin_rate: float  # share of holds cut off
    latency_mean_s: float  # over the shifts
    timeout_rate: float  # share of shifts the timeout took


def fire_s(scores: Scores, threshold: float) -> float:
    """When the first score above the threshold arrived (inf: none did)."""
    return next((t for t, p in scores if p > threshold), math.inf)


def sweep(pauses: list[Pause], scores: list[Scores]) -> list[OperatingPoint]:
    """Every setting of eot-bench's grid on these pauses (module doc); [] without holds or shifts."""
    holds = [k for k, p in enumerate(pauses) if not p.shift and HOLD_MIN_S - EPS <= p.dur_s <= HOLD_MAX_S + EPS]
    shifts = [k for k, p in enumerate(pauses) if p.shift]
    if not holds or not shifts:
        return []
    hold_s = np.array([pauses[k].dur_s for k in holds])
    points = []
    for th in THRESHOLDS:
        hold_fire = np.array([fire_s(scores[k], th) for k in holds])
        shift_fire = np.array([fire_s(scores[k], th) for k in shifts])
        for a in ACTION_DELAYS_S:
            model_cut = np.isfinite(hold_fire) & (hold_s > np.maximum(a, hold_fire) + EPS)
            shift_at = np.maximum(a, shift_fire)
            for timeout in TIMEOUTS_S:
                if timeout + EPS < a:
                    continue
                cut = model_cut | (hold_s > timeout + EPS)
                detected = np.isfinite(shift_fire) & (shift_at <= timeout + EPS)
                latency = np.where(detected, shift_at, timeout)
                points.append(OperatingPoint(th, a, timeout, float(cut.mean()), float(latency.mean()),
                                             float((~detected).mean())))
    return points


def best_within(points: list[OperatingPoint], budget_s: float) -> OperatingPoint | None:
    """The fewest cut-offs among the settings whose mean latency fits the budget (ties as eot-bench breaks them)."""
    feasible = [p for p in points if p.latency_mean_s <= budget_s + EPS]
    return min(feasible, default=None,
               key=lambda p: (p.cutin_rate, p.latency_mean_s, -p.threshold, p.action_delay_s, p.timeout_s))


def budget_report(pauses: list[Pause], scores: list[Scores], scored: bool = True) -> dict:
    """``false_cutin_rate_at_{B}ms`` for each budget, the settings behind them, the pauses counted
    (``scored=False``: a policy without scores, whose settings have no threshold)."""
    points = sweep(pauses, scores)
    out, ops = {}, {}
    for b in BUDGETS_MS:
        best = best_within(points, b / 1000)
        out[f"false_cutin_rate_at_{b}ms"] = None if best is None else round(best.cutin_rate, 3)
        ops[f"{b}ms"] = None if best is None else {
            **({"threshold": best.threshold} if scored else {}), "action_delay_ms": round(best.action_delay_s * 1000),
            "timeout_ms": round(best.timeout_s * 1000), "false_cutin_rate": round(best.cutin_rate, 3),
            "shift_latency_mean_ms": round(best.latency_mean_s * 1000, 1), "timeout_rate": round(best.timeout_rate, 3)}
    out["budget_operating_points"] = ops
    out["budget_pauses"] = {
        "holds": sum(not p.shift and HOLD_MIN_S - EPS <= p.dur_s <= HOLD_MAX_S + EPS for p in pauses),
        "shifts": sum(p.shift for p in pauses)}
    return out


def gated(scores: Scores, complete: Callable[[float], float]) -> Scores:
    """The hybrid's scores in a pause: a learned score counts where Smart Turn, asked about the
    moment it arrived (``complete(s into the pause)``), says complete. Smart Turn is asked only
    about scores above every one let through before: no other can be a first crossing, so the
    kept scores fire exactly when all the gated ones would."""
    out: Scores = []
    for t, p in scores:
        if p > (out[-1][1] if out else 0.0) and complete(t) > COMPLETE:
            out.append((t, p))
    return out


# ---------------------------------------------------------------- the endpointers


def vad_ends(audio: np.ndarray, min_silence_ms: int):
    """(decision time s, speech start sample, speech end sample) of each stretch of speech; the
    decision time is when the silence after it reached min_silence_ms."""
    from rtchat.nodes.asr.frames import Chunk
    from rtchat.nodes.asr.vad import WINDOW, StreamingVad, VadConfig, load_silero

    vad = StreamingVad(load_silero(), VadConfig(min_silence_ms=min_silence_ms))
    x = audio.astype(np.float32) / 32768
    ends, start = [], 0
    for pos in range(0, len(x) - WINDOW + 1, WINDOW):
        for ev in vad.push(Chunk(start=pos, audio=x[pos:pos + WINDOW])):
            if ev.kind == "start":
                start = ev.sample
            else:
                ends.append(((pos + WINDOW) / SR_HZ, start, ev.sample))
    return ends


def silence_policy(audio: np.ndarray, silence_ms: int = 700) -> list[float]:
    return [t for t, _, _ in vad_ends(audio, silence_ms)]


def pipecat_dir() -> Path:
    spec = importlib.util.find_spec("pipecat")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TurnsError(f"Smart Turn v3.2 comes in the pipecat-ai wheel: pip install --no-deps {PIPECAT}")
    return Path(list(spec.submodule_search_locations)[0])


class SmartTurn:
    """Smart Turn v3.2: the last 8 s of 16 kHz audio → P(the turn is complete)."""

    def __init__(self):
        import onnxruntime as ort

        root = pipecat_dir()
        model, features = root / SMART_TURN_FILE, root / SMART_TURN_FEATURES
        for f in (model, features):
            if not f.is_file():
                raise TurnsError(f"{f} is missing: reinstall the wheel (pip install --no-deps --force-reinstall {PIPECAT})")
        spec = importlib.util.spec_from_file_location("rtchat_smart_turn_features", features)
        self.features = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.features)  # plain numpy, loaded from its file (pipecat is not imported)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), sess_options=opts)

    def __call__(self, audio: np.ndarray) -> float:
        x = audio.astype(np.float32) / 32768
        n = SMART_TURN_S * SR_HZ
        x = x[-n:] if len(x) >= n else np.pad(x, (n - len(x), 0))
        mel = self.features.compute_whisper_log_mel_features(x, do_normalize=True)
        return float(self.session.run(None, {"input_features": mel[None].astype(np.float32)})[0][0].item())


def turn_audio(audio: np.ndarray, turn_start_s: float, now_s: float) -> np.ndarray:
    """What pipecat gives Smart Turn: the turn's audio from PRE_SPEECH_S before its first speech
    up to now (the trailing silence included); ``SmartTurn`` keeps the last 8 s."""
    return audio[max(0, round((turn_start_s - PRE_SPEECH_S) * SR_HZ)): round(now_s * SR_HZ)]


@dataclasses.dataclass
class EndpointRun:
    """A Smart Turn policy's decisions (s), the model's probabilities, and how many decisions the fallback made."""

    decisions: list[float] = dataclasses.field(default_factory=list)
    probs: list[float] = dataclasses.field(default_factory=list)
    fallbacks: int = 0

    def fallback_rate(self) -> float:
        return round(self.fallbacks / len(self.decisions), 3) if self.decisions else 0.0

    def ask(self, model: Callable[[np.ndarray], float], audio: np.ndarray) -> tuple[float, float]:
        """(p, inference s): the model's verdict, kept, and how long it took."""
        t0 = time.perf_counter()
        p = model(audio)
        self.probs.append(round(p, 3))
        return p, time.perf_counter() - t0


def smart_turn_policy(audio: np.ndarray, model: Callable[[np.ndarray], float], stop_s: float = FALLBACK_S) -> EndpointRun:
    """Smart Turn at each 200 ms VAD stop, the 3 s fallback after an incomplete verdict (module doc)."""
    run = EndpointRun()
    turn_start = None  # the turn's first speech (sample): Smart Turn hears the turn from there
    pending_end = None  # an incomplete verdict: the fallback counts from this speech end
    for t, start, end in vad_ends(audio, round(SMART_TURN_STOP_S * 1000)):
        if pending_end is not None and start / SR_HZ >= pending_end + stop_s:  # the fallback came before this speech
            run.decisions.append(pending_end + stop_s)
            run.fallbacks += 1
            turn_start = None
        turn_start = start if turn_start is None else turn_start
        p, infer_s = run.ask(model, turn_audio(audio, turn_start / SR_HZ, t))
        if p > COMPLETE:
            run.decisions.append(t + infer_s)
            turn_start, pending_end = None, None
        else:
            pending_end = end / SR_HZ
    if pending_end is not None:
        run.decisions.append(pending_end + stop_s)
        run.fallbacks += 1
    return run


def hybrid_policy(audio: np.ndarray, decisions: list[float], model: Callable[[np.ndarray], float],
                  stop_s: float = FALLBACK_S) -> EndpointRun:
    """The learned decisions, each let through only when Smart Turn, on the turn's audio up to it,
    says complete; a vetoed one leaves the turn to the fallback, ``stop_s`` after the end of the
    speech before it, unless the user speaks again first (module doc)."""
    speech = [(start / SR_HZ, end / SR_HZ) for _, start, end in vad_ends(audio, round(SMART_TURN_STOP_S * 1000))]
    run = EndpointRun()
    since = -math.inf  # the hybrid's last decision: its turn is the speech after it
    fallback = None  # when a vetoed decision's fallback fires
    for d in sorted(decisions):
        if fallback is not None and fallback <= d:
            run.decisions.append(fallback)
            run.fallbacks += 1
            since, fallback = fallback, None
        turn = [s for s, _ in speech if since <= s < d]
        if not turn:  # no user speech since the last decision: nothing to gate
            continue
        p, infer_s = run.ask(model, turn_audio(audio, turn[0], d))
        if p > COMPLETE:
            run.decisions.append(d + infer_s)
            since, fallback = d, None
            continue
        end = max(e for s, e in speech if s < d)  # the speech end the fallback counts from
        resumed = any(end < s <= end + stop_s for s, _ in speech)
        fallback = None if resumed else end + stop_s
    if fallback is not None:
        run.decisions.append(fallback)
        run.fallbacks += 1
    return run


# ---------------------------------------------------------------- the learned policy


PROBE_RE = re.compile(r"^P\(.+\)=([0-9.]+)$")  # a listening agent.cycle's prediction: "P(S2:)=0.738"


@dataclasses.dataclass(frozen=True)
class Session:
    """What the learned policy did in one session, in audio seconds of the user's recording."""

    decisions: list[float]  # agent outputs with words that open an agent turn after user speech
    sounds: list[float]  # the starts of the agent's speech
    probes: list[tuple[float, float]]  # (time, P(the agent's tag comes next)) of each listening cycle


def learned_session(events: list) -> Session:
    """The learned policy's ``Session`` from a session's log events (``analyze.read_events``)."""
    from rtchat.bus.events import AgentCycle, AgentRelease, AgentSay, AsrFinal, AsrPartial
    from rtchat.evals.analyze import MERGE_GAP_NS, AudioClock, agent_chunks, merge
    from rtchat.nodes.agent.transcript import PAUSE_RE

    offset = AudioClock(events).offset_ns or 0
    decisions, probes, user_since = [], [], False
    for e in events:
        ev = e.event
        if isinstance(ev, AsrPartial | AsrFinal) and ev.text.strip():
            user_since = True
        elif isinstance(ev, AgentSay | AgentRelease) and user_since and PAUSE_RE.sub("", ev.text).strip():
            decisions.append((e.t_ns - offset) / 1e9)
            user_since = False
        elif isinstance(ev, AgentCycle) and (m := PROBE_RE.match(ev.prediction)):
            probes.append(((e.t_ns - offset) / 1e9, float(m.group(1))))
    sounds = [(s.start_ns - offset) / 1e9 for s in merge([c[0] for c in agent_chunks(events)], MERGE_GAP_NS)]
    return Session(decisions, sounds, probes)


# ---------------------------------------------------------------- the command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, help="write the results here (what each key means: its \"definitions\")")
    parser.add_argument("--quick", action="store_true", help="one scripted user instead of all")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and the learned policy's run directories here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the learned policy's sessions")


def pause_scores(audio: np.ndarray, pauses: list[Pause], probes: list[tuple[float, float]],
                 model: Callable[[np.ndarray], float]) -> dict[str, list[Scores]]:
    """Each policy's scores in each pause, for the budget metric (module doc)."""

    def smart_at(pause: Pause, t: float) -> float:  # Smart Turn on the turn's audio up to t s into the pause
        return model(turn_audio(audio, pause.turn_start_s, pause.start_s + t))

    out: dict[str, list[Scores]] = {p: [] for p in POLICIES}
    for pause in pauses:
        learned = in_pause(probes, pause)
        out["learned"].append(learned)
        out["silence_700ms"].append([(0.0, 1.0)])  # fires at the action delay: a silence endpointer at that delay
        st = SMART_TURN_STOP_S
        out["smart_turn_v3.2"].append([(st, round(smart_at(pause, st), 3))] if pause.dur_s >= st else [])
        out["hybrid"].append(gated(learned, lambda t, pause=pause: smart_at(pause, t)))
    return out


def summarize(runs: list[tuple[str, list[float]]], truth: dict) -> dict:
    """One policy's as-run figures over the users (module doc)."""
    scored = [score(d, *truth[n]) for n, d in runs]
    fto = [f for s in scored for f in s["fto_ms"]]
    n_dec, n_turns = sum(s["decisions"] for s in scored), sum(len(truth[n][0]) for n, _ in runs)
    return {
        "fto_p50_ms": percentile(fto, 0.5),
        "fto_p90_ms": percentile(fto, 0.9),
        "shift_latency_mean_ms": _mean_ms([f / 1000 for f in fto]),
        "hold_latency_mean_ms": _mean_ms([h for s in scored for h in s["held_s"]]),
        "false_cutin_rate": round(sum(s["false_cutins"] for s in scored) / n_dec, 3) if n_dec else 0.0,
        "missed_rate": round(sum(s["missed"] for s in scored) / n_turns, 3) if n_turns else 0.0,
        "decisions": n_dec,
        "user_turns": n_turns,
        "per_user": {n: s for (n, _), s in zip(runs, scored, strict=True)},
    }


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic
    from rtchat.evals.analyze import read_events
    from rtchat.evals.bench_session import USERS, run_session, script_turns
    from rtchat.evals.simulate_user import engine_synth, parse, render, write_wav

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        smart = SmartTurn()
    except TurnsError as exc:
        print(f"rtchat eval turns: {exc}", file=sys.stderr)
        return 1
    names = ["trip"] if args.quick else sorted(USERS)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rtchat-eval-turns-"))
    work.mkdir(parents=True, exist_ok=True)
    synth = engine_synth("piper")
    runs: dict[str, list] = {p: [] for p in POLICIES}
    fallbacks: dict[str, list[EndpointRun]] = {"smart_turn_v3.2": [], "hybrid": []}
    all_pauses, all_scores = [], {p: [] for p in POLICIES}
    truth, sound_fto, details = {}, [], {}
    for name in names:
        pcm, segments = render(parse("\n".join(USERS[name])), synth, tail_s=LAST_TURN_WAIT_S)
        wav = work / f"{name}.wav"
        write_wav(wav, pcm)
        per_turn = script_turns(USERS[name])
        turns, pauses = turns_of(segments, per_turn), pauses_of(segments, per_turn, len(pcm) / SR_HZ)
        truth[name] = (turns, segments)
        log.info("%s: endpointers…", name)
        st = smart_turn_policy(pcm, smart)
        runs["silence_700ms"].append((name, silence_policy(pcm)))
        runs["smart_turn_v3.2"].append((name, st.decisions))
        log.info("%s: a real-time session for the learned policy (%.0f s)…", name, len(pcm) / SR_HZ)
        run_dir = run_session(wav, work / "runs", list(args.overrides), tail_s=4.0)
        session = learned_session(read_events(run_dir)[0])
        hybrid = hybrid_policy(pcm, session.decisions, smart)
        runs["learned"].append((name, session.decisions))
        runs["hybrid"].append((name, hybrid.decisions))
        fallbacks["smart_turn_v3.2"].append(st)
        fallbacks["hybrid"].append(hybrid)
        sound_fto += score(session.sounds, turns, segments)["fto_ms"]
        scores = pause_scores(pcm, pauses, session.probes, smart)
        all_pauses += pauses
        for p in POLICIES:
            all_scores[p] += scores[p]
        details[name] = {"run": str(run_dir), "smart_turn_probabilities": st.probs,
                         "hybrid_smart_turn_probabilities": hybrid.probs,
                         "pauses": [{**dataclasses.asdict(pause), "scores": {p: scores[p][k] for p in POLICIES}}
                                    for k, pause in enumerate(pauses)]}
    policies = {p: summarize(runs[p], truth) | budget_report(all_pauses, all_scores[p], scored=p != "silence_700ms")
                for p in POLICIES}
    for p, endpoint_runs in fallbacks.items():
        n = sum(len(r.decisions) for r in endpoint_runs)
        policies[p]["smart_turn_fallback_rate"] = round(sum(r.fallbacks for r in endpoint_runs) / n, 3) if n else 0.0
    policies["learned"]["sound_fto_p50_ms"] = percentile(sound_fto, 0.5)
    report = {"policies": policies, "users": {n: USERS[n] for n in names}, "details": details,
              "definitions": __doc__.split("Keys per policy:", 1)[1].strip()}
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({p: {k: v[k] for k in SHOWN if k in v} for p, v in policies.items()}))
    return 0
