"""``rtchat eval turns --json OUT [--quick]``: three turn-taking policies on the same user recordings.

The scripted users of ``rtchat bench session`` (questions, statements, hesitations mid-sentence,
a trailing-off fragment, backchannel-sized utterances) are rendered by ``simulate-user``; the
script gives the truth: each line is one user turn, each ``[pause]`` inside a line a hesitation
after which the same user goes on. Three policies decide when the agent takes the turn:

- ``learned``: the agent itself (the embedded model reading the timed transcript), in full
  real-time sessions (``rtchat run --ui none --in USER.wav``); a decision is the agent output
  (``agent.say``/``agent.release`` with words) that opens an agent turn after user speech.
- ``silence_700ms``: the common voice-agent endpointer: Silero VAD, the turn ends after 700 ms
  of silence (decided at that moment).
- ``smart_turn_v3.2``: pipecat's Smart Turn v3.2 end-of-turn model (ONNX, BSD-2, loaded from the
  ``pipecat-ai`` wheel's files without importing pipecat), run as pipecat runs it: when the VAD
  sees 200 ms of silence, the model scores the turn's last 8 s of audio; complete (p > 0.5) →
  the turn ends then (plus the model's measured inference time); otherwise the policy waits for
  more speech or 3 s of silence.

The two endpointers run offline on the recordings (Silero and the model on the same 16 kHz
audio, time simulated exactly). All times are audio times of the user's recording.

Keys per policy:
- ``fto_p50_ms`` / ``fto_p90_ms``: for each user turn, the first decision after the turn's last
  utterance began, minus the turn's end (negative: the policy took the turn while the user was
  still speaking); the time the policy hands the turn over, not the agent's first sound
  (``learned`` also reports ``sound_fto_p50_ms``, its first sound from the same sessions);
- ``false_cutin_rate``: share of decisions after which the user resumes speaking within 1 s;
- ``missed_rate``: share of user turns with no decision before the next turn begins (the last
  turn: within 5 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import sys
import tempfile
import time
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
    return {
        "fto_p50_ms": percentile(fto, 0.5),
        "fto_p90_ms": percentile(fto, 0.9),
        "false_cutin_rate": round(cutins / len(decisions), 3) if decisions else 0.0,
        "missed_rate": round(missed / len(turns), 3) if turns else 0.0,
        "fto_ms": fto,
        "decisions": len(decisions),
        "false_cutins": cutins,
        "missed": missed,
    }


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
        n = 8 * SR_HZ
        x = x[-n:] if len(x) >= n else np.pad(x, (n - len(x), 0))
        mel = self.features.compute_whisper_log_mel_features(x, do_normalize=True)
        return float(self.session.run(None, {"input_features": mel[None].astype(np.float32)})[0][0].item())


def smart_turn_policy(audio: np.ndarray, model: SmartTurn, stop_s: float = 3.0) -> tuple[list[float], list[float]]:
    """Decisions (s) and the model's probabilities at each VAD stop (module doc)."""
    decisions, probs = [], []
    turn_start = None
    pending_end = None  # an incomplete verdict: the 3 s fallback counts from this speech end
    ends = vad_ends(audio, 200)
    for t, start, end in ends:
        if pending_end is not None and start / SR_HZ >= pending_end + stop_s:  # the fallback came before this speech
            decisions.append(pending_end + stop_s)
            turn_start = None
        turn_start = start if turn_start is None else turn_start
        t0 = time.perf_counter()
        p = model(audio[max(0, turn_start): end])
        infer_s = time.perf_counter() - t0
        probs.append(round(p, 3))
        if p > 0.5:
            decisions.append(t + infer_s)
            turn_start, pending_end = None, None
        else:
            pending_end = end / SR_HZ
    if pending_end is not None:
        decisions.append(pending_end + stop_s)
    return decisions, probs


# ---------------------------------------------------------------- the learned policy


def learned_decisions(run_dir: Path) -> tuple[list[float], list[float]]:
    """(decisions, first sounds) in audio seconds from a session's log: agent outputs with words
    that open an agent turn after user speech."""
    from rtchat.bus.events import AgentRelease, AgentSay, AsrFinal, AsrPartial
    from rtchat.evals.analyze import MERGE_GAP_NS, AudioClock, agent_chunks, merge, read_events
    from rtchat.nodes.agent.transcript import PAUSE_RE

    events, _ = read_events(run_dir)
    offset = AudioClock(events).offset_ns or 0
    decisions, user_since = [], False
    for e in events:
        ev = e.event
        if isinstance(ev, AsrPartial | AsrFinal) and ev.text.strip():
            user_since = True
        elif isinstance(ev, AgentSay | AgentRelease) and user_since and PAUSE_RE.sub("", ev.text).strip():
            decisions.append((e.t_ns - offset) / 1e9)
            user_since = False
    sounds = [(s.start_ns - offset) / 1e9 for s in merge([c[0] for c in agent_chunks(events)], MERGE_GAP_NS)]
    return decisions, sounds


# ---------------------------------------------------------------- the command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="one scripted user instead of all")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and the learned policy's run directories here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the learned policy's sessions")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic
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
    per_policy: dict[str, list] = {"learned": [], "silence_700ms": [], "smart_turn_v3.2": []}
    truth, sound_fto, details = {}, [], {}
    for name in names:
        pcm, segments = render(parse("\n".join(USERS[name])), synth, tail_s=LAST_TURN_WAIT_S)
        wav = work / f"{name}.wav"
        write_wav(wav, pcm)
        turns = turns_of(segments, script_turns(USERS[name]))
        truth[name] = (turns, segments)
        log.info("%s: endpointers…", name)
        st_decisions, probs = smart_turn_policy(pcm, smart)
        per_policy["silence_700ms"].append((name, silence_policy(pcm)))
        per_policy["smart_turn_v3.2"].append((name, st_decisions))
        log.info("%s: a real-time session for the learned policy (%.0f s)…", name, len(pcm) / SR_HZ)
        run_dir = run_session(wav, work / "runs", list(args.overrides), tail_s=4.0)
        decisions, sounds = learned_decisions(run_dir)
        per_policy["learned"].append((name, decisions))
        sound_fto += score(sounds, turns, segments)["fto_ms"]
        details[name] = {"run": str(run_dir), "smart_turn_probabilities": probs}
    policies = {}
    for policy, runs in per_policy.items():
        scored = [score(d, *truth[n]) for n, d in runs]
        fto = [f for s in scored for f in s["fto_ms"]]
        n_dec, n_turns = sum(s["decisions"] for s in scored), sum(len(truth[n][0]) for n, _ in runs)
        policies[policy] = {
            "fto_p50_ms": percentile(fto, 0.5),
            "fto_p90_ms": percentile(fto, 0.9),
            "false_cutin_rate": round(sum(s["false_cutins"] for s in scored) / n_dec, 3) if n_dec else 0.0,
            "missed_rate": round(sum(s["missed"] for s in scored) / n_turns, 3) if n_turns else 0.0,
            "decisions": n_dec,
            "user_turns": n_turns,
            "per_user": {n: s for (n, _), s in zip(runs, scored, strict=True)},
        }
    policies["learned"]["sound_fto_p50_ms"] = percentile(sound_fto, 0.5)
    report = {"policies": policies, "users": {n: USERS[n] for n in names}, "details": details,
              "definitions": __doc__.split("Keys per policy:", 1)[1].strip()}
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({p: {k: v[k] for k in ("fto_p50_ms", "fto_p90_ms", "false_cutin_rate", "missed_rate")}
                      for p, v in policies.items()}))
    return 0
