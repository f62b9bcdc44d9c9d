"""``rtchat bench asr``: the streaming ASR against one offline transcription of the same audio.

Speech is made inside the benchmark: sentences generated from a seeded grammar (no digits, so
Whisper's number formatting cannot count as errors), spoken in turn by the voices of ``--voices``
(default: espeak-ng and the embedded Piper voice joe, so no single synthetic voice decides),
joined with pauses of 0.3–1.5 s into one stream of ``--minutes`` (at least 40 sentences).

Streaming: ``AsrCore`` with the configured recogniser (embedded tiny.en, int8) and the real
Silero VAD reads the stream as 20 ms ``audio.in`` frames. Time is simulated exactly without
sleeping: frame i arrives at audio time i·20 ms, the core handles it when it is free
(``start = max(arrival, previous finish)``) and each event it returns is published at
``finish = start + measured compute time``. So the latencies are those of a real-time run on
this machine with one recogniser thread, and the benchmark takes only the compute time.

Keys:
- ``wer_stream`` / ``wer_offline``: WER (jiwer, after Whisper's ``EnglishTextNormalizer``: lower
  case, no punctuation, British and American spellings as one) of the
  committed words, and of one ``transcribe`` of the whole stream with the same model and
  Whisper's 30 s window (``asr.audio_ctx: full``: the baseline); ``wer_ratio`` = stream / offline.
- ``wer_by_voice``: ``{stream, offline}``: the WER of each voice's sentences (one alignment of
  the whole stream; an insertion counts against the voice of the word it precedes).
- ``wer_breakdown``: ``{stream, offline}``: substitutions, deletions, insertions (word counts of
  the alignment behind each WER), ``reference_words`` and ``top_substitutions`` ([reference,
  heard, count], most frequent first).
- ``commit_p50_ms`` / ``commit_p90_ms``: a committed word's ``asr.final`` publish time minus the
  word's end in audio time.
- ``partial_p50_ms``: per utterance, the first ``asr.partial`` (or final) minus ``vad.start``.
- ``last_word_p50_ms`` / ``last_word_p90_ms``: per utterance, the commit latency of its last
  word — when the recogniser had all of what the user said before they stopped.
- ``final_after_vad_end_p50_ms``: per utterance, the ``asr.final`` that commits its last word
  minus its ``vad.end`` (both publish times; negative when the words were final first). The
  agent's pause clock starts at ``vad.end``; this is how much longer the words take.
- ``vad_end_p50_ms``: ``vad.end``'s publish time minus the speech end it reports (``audio_ns``,
  which carries ``asr.vad_speech_pad_ms``) minus the silence the VAD waits for by its
  configuration (``asr.vad_min_silence_ms`` − the pad): the delay beyond the configured silence.
- ``rtf``: compute time / audio time of the streaming run.
- ``under_load`` (``--under-load``): the stream heard again while the agent's decoding loop runs
  in another process (``evals/under_load.py``: the profile's agent model, dtype and threads,
  decision cycles back to back): ``wer_stream``, the latency keys, ``rtf`` and ``agent_cycles``
  (the cycles the competitor ran); ``under_load_ratio``: each latency under load over alone,
  the same run.
- ``baseline`` (``--baseline KEY=VALUE``, repeatable): the same stream heard again with those
  overrides on top of the run's (``overrides``, ``wer_stream``, the latency keys of
  ``BASELINE_KEYS``, ``rtf``); ``baseline_ratio``: each latency key of this run over the
  baseline's (below 1: this run is faster; not ``final_after_vad_end_p50_ms``, which may be 0 or
  negative). The stream is made once, so both hear the same audio (Piper samples its voice anew
  each time it speaks: two runs of the benchmark do not).
- ``drift_ratio``: median commit latency of the words in the last minute over the first minute
  (needs ≥ 2 minutes; 1.0 means no growth).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import random
import time
from pathlib import Path

import numpy as np

from rtchat.common.stats import percentile

log = logging.getLogger(__name__)

FRAME_MS = 20
PAUSE_RANGE_S = (0.3, 1.5)
MIN_SENTENCES = 40
VOICES = ("espeak", "piper")  # simulate_user's engines: espeak-ng en-us and the embedded Piper joe
UNDER_LOAD_KEYS = ("commit_p50_ms", "commit_p90_ms", "partial_p50_ms", "last_word_p50_ms", "vad_end_p50_ms")
RATIO_KEYS = (*UNDER_LOAD_KEYS, "last_word_p90_ms")  # latencies > 0: their ratio means something
BASELINE_KEYS = (*RATIO_KEYS, "final_after_vad_end_p50_ms")
# settings that make a different recogniser: a baseline that changes one loads its own
LOADER_KEYS = ("backend", "model", "device", "compute_type", "threads", "language", "audio_ctx", "audio_ctx_margin_s")
SUBJECTS = ("the old man", "my sister", "our neighbour", "a young teacher", "the doctor", "his brother",
            "the small child", "her friend", "the farmer", "a tired driver")
VERBS = ("painted", "carried", "cleaned", "opened", "watched", "found", "bought", "repaired", "visited", "followed")
OBJECTS = ("the red door", "a heavy box", "the garden gate", "an empty bottle", "the kitchen window",
           "a wooden chair", "the long letter", "a blue bicycle", "the quiet library", "a warm coat")
ENDINGS = ("this morning", "after lunch", "before the rain", "last weekend", "in the evening", "near the station",
           "with great care", "for a long time", "without a word", "at the market")


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}" for _ in range(n)]


def make_stream(minutes: float, seed: int, voices: tuple[str, ...] = ("espeak",)) -> tuple[np.ndarray, list[str], list[str]]:
    """(int16 16 kHz audio, the sentences, the voice of each) of at least ``minutes``: sentence i
    is spoken by ``voices[i % len(voices)]`` (``simulate_user``'s engines: espeak, piper)."""
    from rtchat.evals.simulate_user import engine_synth
    from rtchat.nodes.asr.frames import SR_HZ, resample

    synths = {v: engine_synth(v) for v in voices}
    rng = random.Random(seed + 1)
    parts, said, spoken_by, total = [np.zeros(SR_HZ // 2, dtype=np.float32)], [], [], SR_HZ // 2
    pool = iter(sentences(100_000, seed))
    while total < minutes * 60 * SR_HZ or len(said) < MIN_SENTENCES:
        text, voice = next(pool), voices[len(said) % len(voices)]
        pcm, sr = synths[voice](text)
        x = resample(pcm.astype(np.float32) / 32768, sr, SR_HZ)
        pause = np.zeros(round(rng.uniform(*PAUSE_RANGE_S) * SR_HZ), dtype=np.float32)
        parts += [x, pause]
        said.append(text)
        spoken_by.append(voice)
        total += len(x) + len(pause)
    audio = np.clip(np.concatenate(parts), -1, 1)
    return (audio * 32767).astype(np.int16), said, spoken_by


@functools.cache
def _normaliser():
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def _norm(s: str) -> str:
    """Whisper's English WER normaliser (lower case, no punctuation, one spelling: "neighbour" and
    "neighbor" are one word, as in the Whisper paper's WER figures)."""
    return " ".join(_normaliser()(s).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(_norm(reference), _norm(hypothesis) or "<empty>"))


def wer_by_voice(said: list[str], spoken_by: list[str], hypothesis: str) -> dict[str, float]:
    """WER per voice over one alignment of the whole stream: each reference word's substitution
    or deletion, and each insertion before it, counts against the voice that said it."""
    import jiwer

    words = [(w, voice) for text, voice in zip(said, spoken_by, strict=True) for w in _norm(text).split()]
    out = jiwer.process_words(" ".join(w for w, _ in words), _norm(hypothesis) or "<empty>")
    errors = dict.fromkeys(spoken_by, 0)
    for c in out.alignments[0]:
        if c.type in ("substitute", "delete"):
            for i in range(c.ref_start_idx, c.ref_end_idx):
                errors[words[i][1]] += 1
        elif c.type == "insert":
            errors[words[min(c.ref_start_idx, len(words) - 1)][1]] += c.hyp_end_idx - c.hyp_start_idx
    counts = {v: sum(1 for _, x in words if x == v) for v in errors}
    return {v: errors[v] / counts[v] for v in errors if counts[v]}


def wer_breakdown(reference: str, hypothesis: str, top: int = 10) -> dict:
    """The errors behind a WER (same normalisation): substitutions, deletions, insertions and the
    ``top`` most frequent substitutions as [reference words, heard words, count]."""
    import collections

    import jiwer

    out = jiwer.process_words(_norm(reference), _norm(hypothesis) or "<empty>")
    ref, hyp = out.references[0], out.hypotheses[0]
    pairs = collections.Counter(
        (" ".join(ref[c.ref_start_idx : c.ref_end_idx]), " ".join(hyp[c.hyp_start_idx : c.hyp_end_idx]))
        for c in out.alignments[0] if c.type == "substitute"
    )
    return {"substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions,
            "reference_words": len(ref), "top_substitutions": [[r, h, n] for (r, h), n in pairs.most_common(top)]}


def stream(core, audio: np.ndarray) -> tuple[list[tuple[int, object]], float]:
    """Feed 20 ms frames on simulated real time, as the node's loop serves its core: every frame
    that has arrived is handled before the next ``on_tick`` (when the core is due); when idle the
    core waits for the next frame. Returns (publish time ns, event) pairs and compute seconds."""
    from rtchat.bus.events import AudioIn
    from rtchat.nodes.asr.frames import SR_HZ

    n = SR_HZ * FRAME_MS // 1000
    positions = range(0, len(audio) - n + 1, n)
    free_ns, busy_s, out, i = 0, 0.0, [], 0
    while True:
        due = core.deadline_ns()
        due = due is not None and due <= free_ns
        if i < len(positions) and (not due or (positions[i] + n) * 1_000_000_000 // SR_HZ <= free_ns):
            pos = positions[i]
            i += 1
            arrival_ns = (pos + n) * 1_000_000_000 // SR_HZ  # the frame is complete at its last sample
            free_ns = max(arrival_ns, free_ns)  # the core's clock when it takes the frame
            frame = AudioIn(pcm=audio[pos : pos + n].tobytes(), sr_hz=SR_HZ, n_samples=n, stream_pos=pos,
                            t_capture_ns=pos * 62_500)
        elif due:
            frame = None
        else:
            return out, busy_s
        t0 = time.perf_counter()
        events = core.on_tick(free_ns) if frame is None else core.on_event(frame, free_ns)
        spent = time.perf_counter() - t0
        busy_s += spent
        free_ns += round(spent * 1e9)
        out += [(free_ns, ev) for ev in events]


def latencies(events: list[tuple[int, object]], duration_s: float, silence_ms: float = 0.0) -> dict:
    """``silence_ms``: how long after the speech ends (its ``vad.end`` time, which carries the
    VAD's pad) the VAD may decide the end by its configuration (min silence − pad)."""
    from rtchat.bus.events import AsrFinal, AsrPartial, VadEnd, VadStart

    commits = [(t, w) for t, ev in events if isinstance(ev, AsrFinal) for w in ev.words]
    commit_ms = [(t - w.end_ns) / 1e6 for t, w in commits]
    first_partial, pending = [], None
    for t, ev in events:
        if isinstance(ev, VadStart):
            pending = ev.audio_ns
        elif isinstance(ev, (AsrPartial, AsrFinal)) and pending is not None and ev.words:
            first_partial.append((t - pending) / 1e6)
            pending = None
    first = [(t - w.end_ns) / 1e6 for t, w in commits if w.end_ns < 60e9]
    last = [(t - w.end_ns) / 1e6 for t, w in commits if w.end_ns >= (duration_s - 60) * 1e9]
    vad_end = [(t - ev.audio_ns) / 1e6 - silence_ms for t, ev in events if isinstance(ev, VadEnd)]
    last_word: dict[int, tuple[int, int]] = {}  # utterance → (publish time, end of its last word)
    for t, ev in events:
        if isinstance(ev, AsrFinal):
            last_word[ev.utterance] = (t, ev.words[-1].end_ns)
    ends = [t for t, ev in events if isinstance(ev, VadEnd)]
    last_ms = [(t - end) / 1e6 for t, end in last_word.values()]
    # utterance k is the one the k-th vad.end closed (its flush numbers the next one)
    after_end = [(t - ends[u]) / 1e6 for u, (t, _) in last_word.items() if u < len(ends)]
    return {
        "commit_p50_ms": percentile(commit_ms, 0.5, ndigits=None),
        "commit_p90_ms": percentile(commit_ms, 0.9, ndigits=None),
        "partial_p50_ms": percentile(first_partial, 0.5, ndigits=None),
        "last_word_p50_ms": percentile(last_ms, 0.5, ndigits=None),
        "last_word_p90_ms": percentile(last_ms, 0.9, ndigits=None),
        "final_after_vad_end_p50_ms": percentile(after_end, 0.5, ndigits=None),
        "vad_end_p50_ms": percentile(vad_end, 0.5, ndigits=None),
        "drift_ratio": (percentile(last, 0.5, ndigits=None) / percentile(first, 0.5, ndigits=None))
        if duration_s >= 120 and first and last else None,
        "committed_words": len(commits),
        "utterances": len(first_partial),
    }


def finals_text(events: list[tuple[int, object]]) -> str:
    """The committed words of a streamed run, in order."""
    from rtchat.bus.events import AsrFinal

    return " ".join(ev.text for _, ev in events if isinstance(ev, AsrFinal))


def vad_wait_ms(cfg) -> float:
    """The silence the VAD waits for after the speech end it reports (min silence − its pad)."""
    return cfg.vad_min_silence_ms - cfg.vad_speech_pad_ms


def ratios(this: dict, base: dict, keys: tuple[str, ...]) -> dict:
    """Each key of ``this`` over ``base`` (None where either is missing or the base is 0)."""
    return {k: this[k] / base[k] if this.get(k) is not None and base.get(k) else None for k in keys}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the speech stream (default 10)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute stream (about 1 min to run on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="sentences and pauses (default 0)")
    parser.add_argument("--config", default="cpu", help="profile whose asr section is used (default cpu)")
    parser.add_argument("--voices", default=",".join(VOICES),
                        help=f"who speaks the sentences, in turn (default {','.join(VOICES)}; allowed: {', '.join(VOICES)})")
    parser.add_argument("--under-load", action="store_true",
                        help="stream again while the agent's decoding loop runs in another process; report both")
    parser.add_argument("--baseline", action="append", metavar="KEY=VALUE", default=None,
                        help="hear the same stream again with this override on top (repeatable; e.g. "
                             "--baseline asr.silence_hop_ms=0); report both and their ratio")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. asr.threads=2 asr.hop_s=1.0")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic
    from rtchat.configs import load
    from rtchat.nodes.asr.backends import LoadError, load_transcriber
    from rtchat.nodes.asr.core import AsrCore
    from rtchat.nodes.asr.frames import SR_HZ
    from rtchat.nodes.asr.vad import load_silero

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    minutes = 2.0 if args.quick else args.minutes
    if minutes <= 0:
        print(f"rtchat bench asr: --minutes must be > 0, got {minutes}")
        return 2
    from rtchat.configs import ConfigError

    try:
        cfg = load(args.config, args.overrides).asr
    except ConfigError as exc:
        print(f"rtchat bench asr: {exc}")
        return 2
    base_cfg = None
    if args.baseline:
        try:
            base_cfg = load(args.config, [*args.overrides, *args.baseline]).asr
        except ConfigError as exc:
            print(f"rtchat bench asr: --baseline: {exc}")
            return 2
    try:
        transcribe = load_transcriber(cfg)
    except LoadError as exc:
        print(f"rtchat bench asr: {exc}")
        return 1
    voices = tuple(v.strip() for v in args.voices.split(",") if v.strip())
    if not voices or set(voices) - set(VOICES):
        print(f"rtchat bench asr: --voices {args.voices!r}: allowed: a comma-separated list of {', '.join(VOICES)}")
        return 2
    audio, said, spoken_by = make_stream(minutes, args.seed, voices)
    reference, n_sentences = " ".join(said), len(said)
    duration_s = len(audio) / SR_HZ
    log.info("stream: %d sentences, %.1f s; streaming…", n_sentences, duration_s)
    silence_ms = vad_wait_ms(cfg)
    events, busy_s = stream(AsrCore(cfg, transcribe, load_silero()), audio)
    hypothesis = finals_text(events)
    alone = latencies(events, duration_s, silence_ms)
    loaded = {}
    if args.under_load:
        from rtchat.evals.under_load import AgentLoad, UnderLoadError

        log.info("streaming again, with the agent's decoding loop in another process…")
        try:
            with AgentLoad(args.config, args.overrides) as load_:
                events_l, busy_l = stream(AsrCore(cfg, transcribe, load_silero()), audio)
            cycles = load_.cycles
        except UnderLoadError as exc:
            print(f"rtchat bench asr: --under-load: {exc}")
            return 1
        lat = latencies(events_l, duration_s, silence_ms)
        loaded = {
            "under_load": {"wer_stream": wer(reference, finals_text(events_l)),
                           **{k: lat[k] for k in UNDER_LOAD_KEYS}, "rtf": busy_l / duration_s, "agent_cycles": cycles},
            "under_load_ratio": ratios(lat, alone, UNDER_LOAD_KEYS),
        }
    compared = {}
    if base_cfg is not None:
        log.info("streaming again, the baseline (%s)…", " ".join(args.baseline))
        same = all(getattr(base_cfg, k) == getattr(cfg, k) for k in LOADER_KEYS)
        try:
            base_transcribe = transcribe if same else load_transcriber(base_cfg)
        except LoadError as exc:
            print(f"rtchat bench asr: --baseline: {exc}")
            return 1
        events_b, busy_b = stream(AsrCore(base_cfg, base_transcribe, load_silero()), audio)
        lat = latencies(events_b, duration_s, vad_wait_ms(base_cfg))
        compared = {
            "baseline": {"overrides": args.baseline,
                         "wer_stream": wer(reference, finals_text(events_b)),
                         **{k: lat[k] for k in BASELINE_KEYS}, "rtf": busy_b / duration_s},
            "baseline_ratio": ratios(alone, lat, RATIO_KEYS),
        }
    log.info("offline transcription of the whole stream…")
    t0 = time.perf_counter()
    if cfg.audio_ctx != "full":
        transcribe = load_transcriber(dataclasses.replace(cfg, audio_ctx="full"))
    offline = " ".join(w for w, *_ in transcribe(audio.astype(np.float32) / 32768, ""))
    offline_s = time.perf_counter() - t0
    wer_stream, wer_offline = wer(reference, hypothesis), wer(reference, offline)
    report = {
        "wer_stream": wer_stream,
        "wer_offline": wer_offline,
        "wer_ratio": wer_stream / wer_offline if wer_offline else None,
        "wer_breakdown": {"stream": wer_breakdown(reference, hypothesis), "offline": wer_breakdown(reference, offline)},
        "wer_by_voice": {"stream": wer_by_voice(said, spoken_by, hypothesis), "offline": wer_by_voice(said, spoken_by, offline)},
        **alone,
        "rtf": busy_s / duration_s,
        "rtf_offline": offline_s / duration_s,
        "audio_s": duration_s,
        "sentences": n_sentences,
        **loaded,
        **compared,
        "config": {"overrides": args.overrides, "backend": cfg.backend, "model": cfg.model,
                   "compute_type": cfg.compute_type, "threads": cfg.threads, "hop_s": cfg.hop_s,
                   "audio_ctx": cfg.audio_ctx, "audio_ctx_margin_s": cfg.audio_ctx_margin_s, "seed": args.seed,
                   "voices": list(voices),
                   "minutes": minutes, "frame_ms": FRAME_MS},
        "definitions": __doc__.split("Keys:", 1)[1].strip(),
    }
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("wer_stream", "wer_offline", "wer_ratio", "commit_p50_ms", "commit_p90_ms",
                                              "partial_p50_ms", "last_word_p50_ms", "last_word_p90_ms",
                                              "final_after_vad_end_p50_ms", "vad_end_p50_ms", "rtf", "drift_ratio")
                      if k in report}
                      | {k: report[k] for k in ("under_load_ratio", "baseline", "baseline_ratio") if k in report}))
    return 0
