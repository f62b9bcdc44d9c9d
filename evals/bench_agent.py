"""``rtchat bench agent``: the agent's decision latency with the reused KV cache vs full re-encoding.

Method. One process, the embedded SmolLM2-135M on the CPU with torch's default threads (the
machine's cores) unless ``--threads``, loaded by ``load_lm`` as the agent loads it (the fast CPU
forward, ``nodes/agent/fastpath.py``), with the agent's default decoding (``AgentConfig().decoding``)
unless ``--decoding`` says otherwise.

For each transcript size (50, 100, 200, 400 words after the prefix, a natural two-speaker
conversation with pauses) the same sequence of transcripts is run as the agent sees them while it
listens: two more user words, two more, a new pause " (0.1)", the pause grown to " (0.2)" —
repeating. Three kinds of call are timed on it (tokenising included; a warm-up call per size and
path untimed):

- cycle (``cycle_*``): the listening decision, as the agent's cycle makes it (issue 19):
  ``AgentLM.next_speaker_prob(transcript, " S2:")`` — one forward pass over the new tokens and
  the " S" token. cached = the KV cache of the previous call; full = after ``runner.reset()``,
  the whole transcript encoded again, as the reference does every cycle.
- speak (``speak_*``): ``AgentLM.generate(transcript, 7)`` with the cache — what a cycle costs
  when the agent has words to generate (a switch without a lookahead reply, or its own floor);
  the generated words are not appended. ``speak_p50_ms_cached_400_greedy``: the same, greedy.
- share (``share_cycle_400``, ``share_speak_400``): where the 400-word cached calls' time goes:
  prefill (bringing the cache up to the transcript), decode (forward passes for generated tokens
  and contrastive candidates), tokenize, and the rest (sampling and Python).

Per-token decoding: from the 400-word transcript, greedy single-token steps (``Runner.feed``),
timed one by one, on the fast path (``decode_token_p50_ms``) and on transformers' forward
(``decode_token_p50_ms_plain``, same weights). Its floor = the weight bytes one step reads (every
parameter and buffer outside embedding tables: one row of those is read) ÷ memory read
bandwidth, measured in the same run as the time ``torch.sum`` takes over a 256 MiB tensor.
``fast_path_identical``: cycles whose greedy 7-token continuation is the same on both paths.

The full benchmark runs every dtype — float32, int8 (``Int8Linear``) and int4 (``Int4Linear``),
``nodes/agent/quant.py`` — the headline keys being ``--dtype``'s (the ``cpu`` profile's by
default); ``by_dtype`` holds them all. Quality per dtype: the greedy 7-token continuation of
every cycle compared with float32's (``<dtype>_greedy_cycles_identical``) and the transcript's
mean next-token negative log-likelihood. ``--quick`` runs the headline dtype only, fewer cycles.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

from rtchat.common.files import write_atomic
from rtchat.common.provenance import machine
from rtchat.common.stats import percentile
from rtchat.configs.schema import AgentConfig

MODEL = "embedded:smollm2-135m"
SIZES = (50, 100, 200, 400)
MAX_NEW_TOKENS = 7
DTYPES = ("float32", "int8", "int4")
AGENT_TAG = " S2:"
BANDWIDTH_BYTES = 256 * 2**20
TARGETS = {"speedup_400": 5.0, "cycle_p50_ms_cached_400": 150.0, "decode_token_p50_ms": 15.0}  # issue 19
UNDER_LOAD_TARGET = 200.0  # cycle_p50_ms_cached_400_under_load
PREFIX = (
    "Participants: S1 (name: unknown, age: unknown, sex: unknown), S2 (name: unknown, age: unknown, sex: unknown); Transcript:"
)
TURNS = (  # (speaker, words); the conversation repeats as long as needed
    ("S1", "hi, how are you doing today?"),
    ("S2", "I'm good, thanks. How about you?"),
    ("S1", "pretty good. I just got back from a trip to the mountains with my family."),
    ("S2", "oh nice, where did you go?"),
    ("S1", "we drove up to a little town near the lake and stayed there for about a week."),
    ("S2", "that sounds lovely. Did you do a lot of hiking?"),
    ("S1", "yeah, every morning. The kids loved it, although they complained about the early starts."),
    ("S2", "ha, I bet they did. Was the weather okay?"),
    ("S1", "mostly sunny, it rained on the last day but we were packing up anyway."),
    ("S2", "lucky. I've been meaning to take a trip like that for ages."),
    ("S1", "you should, it was really relaxing. Do you have any plans for the summer?"),
    ("S2", "not really, maybe visit my parents for a few days. They live by the coast."),
)
USER_WORDS = "and then we went to see the old bridge in the middle of town which was really beautiful".split()


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    cycles: int  # timed cycles per size and path
    decode_steps: int  # timed single-token steps
    dtypes: tuple[str, ...]


FULL = Plan(cycles=12, decode_steps=40, dtypes=DTYPES)
QUICK = Plan(cycles=2, decode_steps=6, dtypes=())  # () = the headline dtype only


# ---------------------------------------------------------------- transcripts


def transcript(n_words: int) -> str:
    """The prefix and a conversation of exactly n_words words (tags and pauses count), ending in the user's turn."""
    words: list[str] = []
    i = 0
    while len(words) < n_words:
        speaker, text = TURNS[i % len(TURNS)]
        words += [f"{speaker}:", *text.split(), f"(0.{3 + i % 5})"]
        i += 1
    words = words[:n_words]
    if words[-1].startswith("("):
        words[-1] = "well"
    return PREFIX + " " + " ".join(words)


def cycle_texts(start: str, n: int) -> list[str]:
    """n + 1 successive transcripts: two user words, two more, a new pause, the pause grown."""
    texts, text, w = [], start, 0
    for i in range(n + 1):
        step = i % 4
        if step in (0, 1):
            text += " " + " ".join(USER_WORDS[(w + j) % len(USER_WORDS)] for j in range(2))
            w += 2
        elif step == 2:
            text += " (0.1)"
        else:
            text = text[: -len(" (0.1)")] + " (0.2)"
        texts.append(text)
    return texts


# ---------------------------------------------------------------- measurements


def memory_bandwidth() -> dict:
    """Read (torch.sum) and copy bandwidth over a 256 MiB tensor, best of 5, GB/s."""
    import torch

    a = torch.rand(BANDWIDTH_BYTES // 4)  # filled: untouched pages would read as the shared zero page
    b = torch.rand(BANDWIDTH_BYTES // 4)
    best = {"read": math.inf, "copy": math.inf}
    for _ in range(5):
        t0 = time.perf_counter()
        a.sum()
        t1 = time.perf_counter()
        b.copy_(a)
        t2 = time.perf_counter()
        best["read"], best["copy"] = min(best["read"], t1 - t0), min(best["copy"], t2 - t1)
    return {
        "read_gb_s": round(BANDWIDTH_BYTES / best["read"] / 1e9, 1),
        "copy_gb_s": round(2 * BANDWIDTH_BYTES / best["copy"] / 1e9, 1),
    }


def weight_bytes_per_token(model) -> int:
    """Bytes of every parameter and buffer a decoding step reads: all but embedding tables and
    the buffers a quantised layer keeps for prefills only (``PREFILL_ONLY``)."""
    import torch

    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        skip = {id(getattr(module, name)) for name in getattr(module, "PREFILL_ONLY", ())}
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(t) in skip:
                continue
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def time_calls(lm, texts: list[str], call, full: bool = False) -> dict[str, list]:
    """Per call of ``call(lm, text)``: ns, its time by kind (lm.timings_ns), tokens run, the result;
    the first text is the untimed warm-up. ``full``: the cache reset before every call."""
    out: dict[str, list] = {"ns": [], "kinds": [], "tokens_run": [], "result": []}
    for i, text in enumerate(texts):
        if full:
            lm.runner.reset()
        before = lm.runner.tokens_run
        lm.timings_ns()
        t0 = time.perf_counter_ns()
        result = call(lm, text)
        elapsed = time.perf_counter_ns() - t0
        kinds = lm.timings_ns()
        if i:
            out["ns"].append(elapsed)
            out["kinds"].append(kinds)
            out["tokens_run"].append(lm.runner.tokens_run - before)
            out["result"].append(result)
    return out


def listen(lm, text: str) -> float:
    return lm.next_speaker_prob(text, AGENT_TAG)


def speak(lm, text: str) -> str:
    return lm.generate(text, MAX_NEW_TOKENS).text


def share(r: dict) -> dict[str, float]:
    """The calls' total time split into prefill, decode, tokenize and the rest (sampling, Python)."""
    total = sum(r["ns"])
    parts = {kind: sum(k.get(kind, 0) for k in r["kinds"]) for kind in ("prefill", "decode", "tokenize")}
    parts["sampling_and_python"] = max(0, total - sum(parts.values()))
    return {kind: round(ns / total, 3) for kind, ns in parts.items()}


def time_decode_steps(runner, ids: list[int], steps: int) -> tuple[list[int], list[int]]:
    """(ns per greedy single-token step, the tokens) after ids."""
    import torch

    times, tokens = [], []
    with torch.inference_mode():
        runner.sync(ids)
        token = int(runner.logits.argmax())
        for _ in range(steps + 1):
            t0 = time.perf_counter_ns()
            runner.feed(token)
            times.append(time.perf_counter_ns() - t0)
            tokens.append(token)
            token = int(runner.logits.argmax())
    return times[1:], tokens  # the first step is a warm-up


def transcript_nll(lm, text: str) -> float:
    """Mean negative log-likelihood per token of text (one uncached pass): a quality check of a dtype."""
    import torch

    ids = torch.tensor([lm.tok(text)["input_ids"]])
    with torch.inference_mode():
        logits = lm.runner.model(input_ids=ids).logits[0, :-1].float()
    return round(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])), 4)


@contextlib.contextmanager
def greedy(lm):
    """The model decodes greedily inside (the quality checks and the greedy speak timing)."""
    from rtchat.nodes.agent.sampling import Greedy

    saved, lm.strategy = lm.strategy, Greedy()
    try:
        yield
    finally:
        lm.strategy = saved


def greedy_cycles(lm, texts: list[str]) -> list[str]:
    with greedy(lm):
        return [lm.generate(text, MAX_NEW_TOKENS).text for text in texts]


def ms(values: list[int], q: float) -> float:
    return percentile(values, q, scale=1e-6)


def measure_dtype(dtype: str, decoding: str, plan: Plan, bandwidth: dict) -> dict:
    from rtchat.nodes.agent.decoding import Runner
    from rtchat.nodes.agent.lm import load_lm

    cfg = dataclasses.replace(AgentConfig(), model=MODEL, device="cpu", dtype=dtype, decoding=decoding)
    t0 = time.perf_counter()
    lm = load_lm(cfg)
    out: dict = {"dtype": dtype, "load_s": round(time.perf_counter() - t0, 1), "fast_path": lm.runner.fast is not None}
    greedy_texts: list[str] = []
    for size in SIZES:
        texts = cycle_texts(transcript(size), plan.cycles)
        paths = {"cached": time_calls(lm, texts, listen), "full": time_calls(lm, texts, listen, full=True)}
        out[f"tokens_{size}"] = len(lm.tok(texts[-1])["input_ids"])
        for name, r in paths.items():
            out[f"cycle_p50_ms_{name}_{size}"] = ms(r["ns"], 0.5)
            out[f"cycle_p90_ms_{name}_{size}"] = ms(r["ns"], 0.9)
            out[f"prefill_p50_ms_{name}_{size}"] = ms([k.get("prefill", 0) for k in r["kinds"]], 0.5)
            out[f"tokens_run_per_cycle_{name}_{size}"] = round(statistics.mean(r["tokens_run"]), 1)
        out[f"speedup_{size}"] = round(out[f"cycle_p50_ms_full_{size}"] / out[f"cycle_p50_ms_cached_{size}"], 2)
        spoken = time_calls(lm, texts, speak)
        out[f"speak_p50_ms_cached_{size}"] = ms(spoken["ns"], 0.5)
        out[f"speak_p90_ms_cached_{size}"] = ms(spoken["ns"], 0.9)
        out[f"speak_tokens_run_per_cycle_{size}"] = round(statistics.mean(spoken["tokens_run"]), 1)
        greedy_texts += greedy_cycles(lm, texts[1:])
    size = SIZES[-1]
    out[f"share_cycle_{size}"], out[f"share_speak_{size}"] = share(paths["cached"]), share(spoken)
    with greedy(lm):
        out[f"speak_p50_ms_cached_{size}_greedy"] = ms(time_calls(lm, texts, speak)["ns"], 0.5)
    fast_runner = lm.runner
    lm.runner = Runner(fast_runner.model, fast=False)  # transformers' forward on the same weights
    plain_greedy = greedy_cycles(lm, texts[1:])
    ids = lm.tok(transcript(size))["input_ids"]
    plain_steps, _ = time_decode_steps(lm.runner, ids, plan.decode_steps)
    lm.runner = fast_runner
    same = sum(a == b for a, b in zip(plain_greedy, greedy_texts[-len(plain_greedy) :], strict=True))
    out["fast_path_identical"] = f"{same}/{len(plain_greedy)}"
    out[f"transcript_nll_{size}"] = transcript_nll(lm, transcript(size))
    steps, tokens = time_decode_steps(lm.runner, ids, plan.decode_steps)
    out["decode_token_p50_ms"] = ms(steps, 0.5)
    out["decode_token_p90_ms"] = ms(steps, 0.9)
    out["decode_token_p50_ms_plain"] = ms(plain_steps, 0.5)
    out["weight_bytes_per_token"] = weight_bytes_per_token(lm.runner.model)
    out["decode_token_floor_ms"] = round(out["weight_bytes_per_token"] / (bandwidth["read_gb_s"] * 1e9) * 1e3, 1)
    out["kv_cache_bytes_400"] = sum(layer.keys.nbytes + layer.values.nbytes for layer in lm.runner.cache.layers)
    out["_greedy"], out["_decode_tokens"] = greedy_texts, tokens
    return out


UNDER_LOAD_THREADS = (1, 2)  # agent threads measured under load; the profile's count gives the headline keys


def measure_under_load(dtype: str, decoding: str, plan: Plan) -> dict:
    """The 400-word cached cycles and speak calls and the decode steps again, while
    ``SessionLoad`` runs the recogniser's calls and the voice's syntheses in other processes —
    once per agent thread count in UNDER_LOAD_THREADS; the headline keys are for the ``cpu``
    profile's ``agent.threads`` (what a live session runs), ``under_load_by_threads`` has all."""
    import torch

    from rtchat.evals.under_load import SessionLoad
    from rtchat.nodes.agent.lm import load_lm

    lm = load_lm(dataclasses.replace(AgentConfig(), model=MODEL, device="cpu", dtype=dtype, decoding=decoding))
    size = SIZES[-1]
    texts = cycle_texts(transcript(size), plan.cycles)
    ids = lm.tok(transcript(size))["input_ids"]
    saved, by_threads = torch.get_num_threads(), {}
    try:
        for threads in UNDER_LOAD_THREADS:
            torch.set_num_threads(threads)
            with SessionLoad() as load:
                cycles = time_calls(lm, texts, listen)
                spoken = time_calls(lm, texts, speak)
                steps, _ = time_decode_steps(lm.runner, ids, plan.decode_steps)
                counts = load.counts
            by_threads[threads] = {
                f"cycle_p50_ms_cached_{size}_under_load": ms(cycles["ns"], 0.5),
                f"cycle_p90_ms_cached_{size}_under_load": ms(cycles["ns"], 0.9),
                f"prefill_p50_ms_cached_{size}_under_load": ms([k.get("prefill", 0) for k in cycles["kinds"]], 0.5),
                f"speak_p50_ms_cached_{size}_under_load": ms(spoken["ns"], 0.5),
                "decode_token_p50_ms_under_load": ms(steps, 0.5),
                "under_load": counts,
            }
    finally:
        torch.set_num_threads(saved)
    threads = profile_agent().threads or saved
    return {**by_threads.get(threads, by_threads[UNDER_LOAD_THREADS[-1]]), "under_load_threads": threads,
            "under_load_by_threads": by_threads}


def measure(plan: Plan, headline: str, decoding: str) -> dict:
    import torch

    bandwidth = memory_bandwidth()
    by_dtype = {}
    for dtype in plan.dtypes or (headline,):
        print(f"measuring {dtype} …", file=sys.stderr, flush=True)
        by_dtype[dtype] = measure_dtype(dtype, decoding, plan, bandwidth)
    result = {key: value for key, value in by_dtype[headline].items() if not key.startswith("_")}
    result.update(model=MODEL, decoding=decoding, max_new_tokens=MAX_NEW_TOKENS, threads=torch.get_num_threads())
    result["memory_read_gb_s"], result["memory_copy_gb_s"] = bandwidth["read_gb_s"], bandwidth["copy_gb_s"]
    if "float32" in by_dtype:
        a = by_dtype["float32"]
        for dtype, b in by_dtype.items():
            if dtype == "float32":
                continue
            same = sum(x == y for x, y in zip(a["_greedy"], b["_greedy"], strict=True))
            result[f"{dtype}_greedy_cycles_identical"] = f"{same}/{len(a['_greedy'])}"
            pairs = zip(a["_decode_tokens"], b["_decode_tokens"], strict=True)
            result[f"{dtype}_greedy_decode_first_difference"] = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
    result["by_dtype"] = {d: {k: v for k, v in r.items() if not k.startswith("_")} for d, r in by_dtype.items()}
    result["targets"] = {**TARGETS}
    result["met"] = {
        "speedup_400": result["speedup_400"] >= TARGETS["speedup_400"],
        "cycle_p50_ms_cached_400": result["cycle_p50_ms_cached_400"] <= TARGETS["cycle_p50_ms_cached_400"],
        "decode_token_p50_ms": result["decode_token_p50_ms"] <= TARGETS["decode_token_p50_ms"],
    }
    result["machine"] = machine("torch", "transformers") | {"torch_threads": torch.get_num_threads()}
    result["definitions"] = definitions(plan)
    return result


def definitions(plan: Plan) -> dict:
    return {
        "cycle": f"the listening decision: AgentLM.next_speaker_prob(transcript, {AGENT_TAG!r}) (one forward pass over "
        "the new tokens and the ' S' token) after the transcript changed (2 user words, 2 more, a new pause (0.1), the "
        f"pause grown to (0.2), repeating); tokenising included; {plan.cycles} timed cycles per size and path after 1 untimed",
        "cycle_p50_ms_cached_N/_full_N": "p50 (p90; linear interpolation, common/stats.py) of cycle time at N "
        "transcript words; cached = the KV cache kept from the previous cycle, full = reset before each cycle "
        "(the reference re-encodes everything)",
        "speedup_N": "cycle_p50_ms_full_N / cycle_p50_ms_cached_N",
        "prefill_p50_ms_cached_N/_full_N": "the part of a cycle spent bringing the cache up to the transcript",
        "speak_p50_ms_cached_N": f"AgentLM.generate(transcript, {MAX_NEW_TOKENS}) with the configured decoding on the "
        "same transcripts, cached: a cycle that generates the agent's words; _greedy: the same with greedy decoding",
        "share_cycle_400/share_speak_400": "fractions of the 400-word cached calls' time in prefill, decode (generated "
        "tokens and contrastive candidates), tokenize, and sampling_and_python (the rest)",
        "tokens_N": "tokens of the last transcript at N words; tokens_run_per_cycle_*: tokens through the model per "
        "call, contrastive candidates included",
        "decode_token_p50_ms": f"one greedy single-token step (Runner.feed) at the {SIZES[-1]}-word transcript, "
        f"{plan.decode_steps} steps, on the fast CPU forward; _plain: on transformers' forward, same weights",
        "fast_path_identical": "cycles whose greedy 7-token continuation is the same on the fast path as on "
        "transformers' forward",
        "decode_token_floor_ms": "weight_bytes_per_token / memory_read_gb_s: the time to read the weights once",
        "weight_bytes_per_token": "bytes of all parameters and buffers outside embedding tables",
        "memory_read_gb_s": "256 MiB / best of 5 torch.sum over it; memory_copy_gb_s: 2 x 256 MiB / best copy",
        "<dtype>_greedy_cycles_identical": "cycles whose greedy 7-token continuation is the same as float32's",
        "<dtype>_greedy_decode_first_difference": "first greedy decode step where the dtype and float32 differ (null: none)",
        "transcript_nll_400": "mean next-token negative log-likelihood (nats) over the 400-word transcript",
        "*_under_load": "(--under-load) the same keys measured again while the recogniser (the profile's "
        "asr: one call on a 3 s utterance every asr.hop_s) and the voice (the profile's tts: a 13-word reply "
        "every 3 s) run in two other processes (evals/under_load.py SessionLoad); under_load: their counts; "
        "under_load_by_threads: the same with 1 and with 2 agent threads; the headline keys are for the cpu "
        "profile's agent.threads (under_load_threads)",
        "dtype": "float32; int8 = Int8Linear (int8 weights, one bf16 scale per row); int4 = Int4Linear (4-bit weights, "
        "a bf16 scale and zero per 32 inputs); bf16 activations in their matmuls, float32 elsewhere",
    }


def summary(r: dict) -> str:
    m = r["machine"]
    lines = [f"rtchat bench agent: {r['model']} {r['dtype']}, {r['decoding']}, {m['torch_threads']} threads, {m['cpu']}"]
    lines.append(f"{'words':>6}{'tokens':>8}{'cached p50/p90 ms':>20}{'full p50/p90 ms':>18}{'speedup':>9}{'prefill c/f ms':>16}")
    for n in SIZES:
        cached = f"{r[f'cycle_p50_ms_cached_{n}']}/{r[f'cycle_p90_ms_cached_{n}']}"
        full = f"{r[f'cycle_p50_ms_full_{n}']}/{r[f'cycle_p90_ms_full_{n}']}"
        prefill = f"{r[f'prefill_p50_ms_cached_{n}']}/{r[f'prefill_p50_ms_full_{n}']}"
        lines.append(f"{n:>6}{r[f'tokens_{n}']:>8}{cached:>20}{full:>18}{r[f'speedup_{n}']:>9}{prefill:>16}")
    n = SIZES[-1]
    lines.append(
        f"speak (generate {MAX_NEW_TOKENS}) p50 at {n}: {r[f'speak_p50_ms_cached_{n}']} ms {r['decoding']}, "
        f"{r[f'speak_p50_ms_cached_{n}_greedy']} ms greedy; shares: cycle {r[f'share_cycle_{n}']}, speak {r[f'share_speak_{n}']}"
    )
    lines.append(
        f"decode step p50 {r['decode_token_p50_ms']} ms fast path, {r['decode_token_p50_ms_plain']} ms transformers' forward "
        f"(floor {r['decode_token_floor_ms']} ms: {r['weight_bytes_per_token'] / 1e6:.0f} MB at {r['memory_read_gb_s']} GB/s); "
        f"fast path greedy cycles identical {r['fast_path_identical']}"
    )
    for d, x in r["by_dtype"].items():
        if d != r["dtype"]:
            lines.append(
                f"{d}: cycle cached/full p50 at {n} {x[f'cycle_p50_ms_cached_{n}']}/{x[f'cycle_p50_ms_full_{n}']} ms, "
                f"speak {x[f'speak_p50_ms_cached_{n}']} ms, decode step {x['decode_token_p50_ms']} ms"
            )
    same = {k.split("_")[0]: v for k, v in r.items() if k.endswith("_greedy_cycles_identical")}
    if same:
        nll = {d: x[f"transcript_nll_{n}"] for d, x in r["by_dtype"].items()}
        lines.append(f"vs float32: greedy cycles identical {same}; transcript NLL {nll}")
    if "under_load" in r:
        lines.append(
            f"under load ({r['under_load']}, {r['under_load_threads']} agent threads): cycle p50/p90 at {n} "
            f"{r[f'cycle_p50_ms_cached_{n}_under_load']}/"
            f"{r[f'cycle_p90_ms_cached_{n}_under_load']} ms, speak {r[f'speak_p50_ms_cached_{n}_under_load']} ms, "
            f"decode step {r['decode_token_p50_ms_under_load']} ms"
        )
    met = (f"{k} {r[k]} ({'met' if r['met'][k] else 'MISSED'} {v})" for k, v in r["targets"].items())
    lines.append("targets: " + "; ".join(met))
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="write the results here (atomically)")
    parser.add_argument("--quick", action="store_true", help="the headline dtype only, 2 cycles per size (about 15 s)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="the dtype of the headline keys (default: the cpu profile's agent.dtype)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the cycles (default 0: torch's default)")
    parser.add_argument("--under-load", action="store_true",
                        help="measure the 400-word cycles and decode steps again beside the recogniser's calls and the "
                        "voice's syntheses in other processes (keys ending _under_load)")
    parser.add_argument(
        "--decoding",
        choices=("greedy", "nucleus", "typical", "contrastive", "dynamic_contrastive"),
        default=AgentConfig().decoding,
        help=f"decoding for the cycles (default {AgentConfig().decoding}, the agent's)",
    )


def profile_agent() -> AgentConfig:
    """The ``cpu`` profile's agent settings (what a live session on this machine runs)."""
    from rtchat.configs import load

    return load("cpu", []).agent


def run(args: argparse.Namespace) -> int:
    from rtchat.evals.under_load import UnderLoadError
    from rtchat.nodes.agent.loading import LoadError

    if args.threads < 0:
        print(f"rtchat bench agent: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    dtype = args.dtype or profile_agent().dtype
    start = time.perf_counter()
    try:
        result = measure(plan, dtype, args.decoding)
        if args.under_load:
            print("measuring under load …", file=sys.stderr, flush=True)
            loaded = measure_under_load(dtype, args.decoding, plan)
            result.update(loaded)
            key = f"cycle_p50_ms_cached_{SIZES[-1]}_under_load"
            result["targets"][key] = UNDER_LOAD_TARGET
            result["met"][key] = loaded[key] <= UNDER_LOAD_TARGET
    except (LoadError, UnderLoadError) as exc:
        print(f"rtchat bench agent: {exc}", file=sys.stderr)
        return 1
    result["duration_s"] = round(time.perf_counter() - start, 1)
    write_atomic(args.json, json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {args.json}")
    return 0
