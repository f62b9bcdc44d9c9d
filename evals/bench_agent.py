"""``rtchat bench agent``: agent cycle latency with the reused KV cache vs full re-encoding.

Method. One process, the embedded SmolLM2-135M on the CPU with torch's default threads (the
machine's cores), loaded by ``load_lm`` as the agent loads it, with the agent's default decoding
(``AgentConfig().decoding``, top_k 8, top_p 0.7) unless ``--decoding`` says otherwise.

For each transcript size (50, 100, 200, 400 words after the prefix, a natural two-speaker
conversation with pauses) the same sequence of cycles runs twice:

- cached: ``AgentLM.generate(transcript, 7)`` on the one ``AgentLM``, whose KV cache holds the
  previous cycle's transcript (and the tokens it generated, which the next transcript drops);
- full: the same call after ``runner.reset()``, so the whole transcript is encoded again, as the
  reference does (HF ``generate`` on the full string every cycle).

A cycle first changes the transcript as a listening agent sees it: two more user words, two
more, a new pause " (0.1)", the pause grown to " (0.2)" — repeating. The generated words are not
appended (the user keeps the floor). Cycles are timed around ``generate`` (tokenising included);
a warm-up cycle per size and path is not timed.

Per-token decoding: from the 400-word transcript, greedy single-token steps (``Runner.feed``),
timed one by one. Its floor = the weight bytes one step reads (every parameter and buffer
outside embedding tables: one row of those is read) ÷ memory read bandwidth, measured in the
same run as the time ``torch.sum`` takes over a 256 MiB tensor (2 threads).

Both dtypes run in the full benchmark, float32 (the default on CPU) and int8 (``Int8Linear``:
int8 weights, bf16 scales, float32 elsewhere); the headline keys are for ``--dtype`` (int8 by
default), ``by_dtype`` holds both. int8 correctness: the greedy 7-token continuation of every
cycle's transcript compared with float32's (``int8_greedy_cycles_identical``). ``--quick`` runs
the headline dtype only, fewer cycles and steps.
"""

from __future__ import annotations

import argparse
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
DTYPES = ("float32", "int8")
BANDWIDTH_BYTES = 256 * 2**20
TARGETS = {"speedup_400": 5.0, "cycle_p50_ms_cached_400": 150.0, "decode_token_p50_ms": 20.0}
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
    """Bytes of every parameter and buffer a decoding step reads: all but embedding tables."""
    import torch

    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def time_cycles(lm, texts: list[str], full: bool) -> dict[str, list]:
    """Per cycle: ns, prefill ns, tokens run, generated text; the first text is the untimed warm-up."""
    out: dict[str, list] = {"ns": [], "prefill_ns": [], "tokens_run": [], "text": []}
    for i, text in enumerate(texts):
        if full:
            lm.runner.reset()
        before = lm.runner.tokens_run
        lm.timings_ns()
        t0 = time.perf_counter_ns()
        gen = lm.generate(text, MAX_NEW_TOKENS)
        elapsed = time.perf_counter_ns() - t0
        if i:
            out["ns"].append(elapsed)
            out["prefill_ns"].append(lm.timings_ns().get("prefill", 0))
            out["tokens_run"].append(lm.runner.tokens_run - before)
            out["text"].append(gen.text)
    return out


def time_decode_steps(lm, text: str, steps: int) -> tuple[list[int], list[int]]:
    """(ns per greedy single-token step, the tokens) from text."""
    import torch

    runner, times, tokens = lm.runner, [], []
    with torch.inference_mode():
        runner.sync(lm.tok(text)["input_ids"])
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


def greedy_cycles(lm, texts: list[str]) -> list[str]:
    from rtchat.nodes.agent.decoding import Greedy

    saved = lm.strategy
    lm.strategy = Greedy()
    try:
        return [lm.generate(text, MAX_NEW_TOKENS).text for text in texts]
    finally:
        lm.strategy = saved


def measure_dtype(dtype: str, decoding: str, plan: Plan, bandwidth: dict) -> dict:
    from rtchat.nodes.agent.lm import load_lm

    cfg = dataclasses.replace(AgentConfig(), model=MODEL, device="cpu", dtype=dtype, decoding=decoding)
    t0 = time.perf_counter()
    lm = load_lm(cfg)
    out: dict = {"dtype": dtype, "load_s": round(time.perf_counter() - t0, 1)}
    greedy: list[str] = []
    for size in SIZES:
        texts = cycle_texts(transcript(size), plan.cycles)
        paths = {"cached": time_cycles(lm, texts, full=False), "full": time_cycles(lm, texts, full=True)}
        out[f"tokens_{size}"] = len(lm.tok(texts[-1])["input_ids"])
        for name, r in paths.items():
            out[f"cycle_p50_ms_{name}_{size}"] = percentile(r["ns"], 0.5, scale=1e-6)
            out[f"cycle_p90_ms_{name}_{size}"] = percentile(r["ns"], 0.9, scale=1e-6)
            out[f"prefill_p50_ms_{name}_{size}"] = percentile(r["prefill_ns"], 0.5, scale=1e-6)
            out[f"tokens_run_per_cycle_{name}_{size}"] = round(statistics.mean(r["tokens_run"]), 1)
        out[f"speedup_{size}"] = round(out[f"cycle_p50_ms_full_{size}"] / out[f"cycle_p50_ms_cached_{size}"], 2)
        greedy += greedy_cycles(lm, texts[1:])
    out[f"transcript_nll_{SIZES[-1]}"] = transcript_nll(lm, transcript(SIZES[-1]))
    steps, tokens = time_decode_steps(lm, transcript(SIZES[-1]), plan.decode_steps)
    out["decode_token_p50_ms"] = percentile(steps, 0.5, scale=1e-6)
    out["decode_token_p90_ms"] = percentile(steps, 0.9, scale=1e-6)
    out["weight_bytes_per_token"] = weight_bytes_per_token(lm.runner.model)
    out["decode_token_floor_ms"] = round(out["weight_bytes_per_token"] / (bandwidth["read_gb_s"] * 1e9) * 1e3, 1)
    out["kv_cache_bytes_400"] = sum(layer.keys.nbytes + layer.values.nbytes for layer in lm.runner.cache.layers)
    out["_greedy"], out["_decode_tokens"] = greedy, tokens
    return out


def measure_under_load(dtype: str, decoding: str, plan: Plan) -> dict:
    """The 400-word cached cycles and the decode steps again, while ``SessionLoad`` runs the
    recogniser's calls and the voice's syntheses in other processes."""
    from rtchat.evals.under_load import SessionLoad
    from rtchat.nodes.agent.lm import load_lm

    lm = load_lm(dataclasses.replace(AgentConfig(), model=MODEL, device="cpu", dtype=dtype, decoding=decoding))
    size = SIZES[-1]
    texts = cycle_texts(transcript(size), plan.cycles)
    with SessionLoad() as load:
        cycles = time_cycles(lm, texts, full=False)
        steps, _ = time_decode_steps(lm, transcript(size), plan.decode_steps)
        counts = load.counts
    return {
        f"cycle_p50_ms_cached_{size}_under_load": percentile(cycles["ns"], 0.5, scale=1e-6),
        f"cycle_p90_ms_cached_{size}_under_load": percentile(cycles["ns"], 0.9, scale=1e-6),
        f"prefill_p50_ms_cached_{size}_under_load": percentile(cycles["prefill_ns"], 0.5, scale=1e-6),
        "decode_token_p50_ms_under_load": percentile(steps, 0.5, scale=1e-6),
        "under_load": counts,
    }


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
    if "float32" in by_dtype and "int8" in by_dtype:
        a, b = by_dtype["float32"], by_dtype["int8"]
        same = sum(x == y for x, y in zip(a["_greedy"], b["_greedy"], strict=True))
        result["int8_greedy_cycles_identical"] = f"{same}/{len(a['_greedy'])}"
        prefix = next((i for i, (x, y) in enumerate(zip(a["_decode_tokens"], b["_decode_tokens"], strict=True)) if x != y), None)
        result["int8_greedy_decode_first_difference"] = prefix  # None: the same tokens throughout
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
        "cycle": f"AgentLM.generate(transcript, {MAX_NEW_TOKENS}) after the transcript changed (2 user words, 2 more, "
        "a new pause (0.1), the pause grown to (0.2), repeating); tokenising included; "
        f"{plan.cycles} timed cycles per size and path after 1 untimed",
        "cycle_p50_ms_cached_N/_full_N": "p50 (p90; linear interpolation, common/stats.py) of cycle time at N "
        "transcript words; cached = the KV cache kept from the previous cycle, full = reset before each cycle "
        "(the reference re-encodes everything)",
        "speedup_N": "cycle_p50_ms_full_N / cycle_p50_ms_cached_N",
        "prefill_p50_ms_cached_N/_full_N": "the part of a cycle spent bringing the cache up to the transcript "
        "(Runner.sync), before decoding",
        "tokens_N": "tokens of the last transcript at N words; tokens_run_per_cycle_*: tokens through the model per "
        "cycle, contrastive candidates included",
        "decode_token_p50_ms": f"one greedy single-token step (Runner.feed) at the {SIZES[-1]}-word transcript, "
        f"{plan.decode_steps} steps",
        "decode_token_floor_ms": "weight_bytes_per_token / memory_read_gb_s: the time to read the weights once",
        "weight_bytes_per_token": "bytes of all parameters and buffers outside embedding tables",
        "memory_read_gb_s": "256 MiB / best of 5 torch.sum over it; memory_copy_gb_s: 2 x 256 MiB / best copy",
        "int8_greedy_cycles_identical": "cycles whose greedy 7-token continuation is the same with int8 as with float32",
        "int8_greedy_decode_first_difference": "first greedy decode step where int8 and float32 differ (null: none)",
        "transcript_nll_400": "mean next-token negative log-likelihood (nats) over the 400-word transcript",
        "*_under_load": "(--under-load) the same keys measured again while the recogniser (the profile's "
        "asr: one call on a 3 s utterance every asr.hop_s) and the voice (the profile's tts: a 13-word reply "
        "every 3 s) run in two other processes (evals/under_load.py SessionLoad); under_load: their counts",
        "dtype": "float32, or int8 = Int8Linear (int8 weights, one bf16 scale per row, bf16 activations in the "
        "matmuls) with float32 elsewhere",
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
    lines.append(
        f"decode step p50 {r['decode_token_p50_ms']} ms (floor {r['decode_token_floor_ms']} ms: "
        f"{r['weight_bytes_per_token'] / 1e6:.0f} MB at {r['memory_read_gb_s']} GB/s)"
    )
    for d, x in r["by_dtype"].items():
        if d != r["dtype"]:
            lines.append(
                f"{d}: cached/full p50 at 400 {x['cycle_p50_ms_cached_400']}/{x['cycle_p50_ms_full_400']} ms, "
                f"decode step {x['decode_token_p50_ms']} ms"
            )
    if "int8_greedy_cycles_identical" in r:
        nll = {d: x["transcript_nll_400"] for d, x in r["by_dtype"].items()}
        lines.append(f"int8 vs float32: greedy {r['int8_greedy_cycles_identical']} cycles identical; transcript NLL {nll}")
    if "under_load" in r:
        n = SIZES[-1]
        lines.append(
            f"under load ({r['under_load']}): cached p50/p90 at {n} {r[f'cycle_p50_ms_cached_{n}_under_load']}/"
            f"{r[f'cycle_p90_ms_cached_{n}_under_load']} ms, decode step {r['decode_token_p50_ms_under_load']} ms"
        )
    met = (f"{k} {r[k]} ({'met' if r['met'][k] else 'MISSED'} {v})" for k, v in r["targets"].items())
    lines.append("targets: " + "; ".join(met))
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="write the results here (atomically)")
    parser.add_argument("--quick", action="store_true", help="the headline dtype only, 2 cycles per size (about 15 s)")
    parser.add_argument("--dtype", choices=DTYPES, default="int8", help="the dtype of the headline keys (default int8)")
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
    start = time.perf_counter()
    try:
        result = measure(plan, args.dtype, args.decoding)
        if args.under_load:
            print("measuring under load …", file=sys.stderr, flush=True)
            loaded = measure_under_load(args.dtype, args.decoding, plan)
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
