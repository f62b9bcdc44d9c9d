"""``rtchat eval switch``: the quick turn-taking check (lora-trial.md §3b).

For N sampled lines, the model sees the line up to a point and decodes 3 tokens greedily:
- switch points: before every speaker tag that changes the speaker (the prefix ends after the
  turn-final pause where one is written);
- within-turn points: as many as there are switch points in the line, half of them right after a
  within-turn pause, the rest after a word, never straight after a tag.
A switch is predicted when the 3 tokens hold a tag of the other speaker (`` S2`` after S1's
words). AUC ranks the points by p(" S") at the point. ``f1_after_pause`` counts only the points
right after a pause. Plain HF forward passes (``generate``, greedy), batched with left padding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import re
from pathlib import Path

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"S(\d+):")
PAUSE_RE = re.compile(r"\(\d+(?:\.\d+)?\)")
PREDICTED_TAG_RE = re.compile(r"(?:^|\s)S(\d)(?::|\s|$)")
NEW_TOKENS = 3
EMBEDDED_BASE = "embedded-base"
EMBEDDED = "embedded"


class EvalError(RuntimeError):
    """The evaluation cannot run; the message says what was wrong and how to fix it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    prefix: str  # the line up to the point, no trailing space
    switch: bool  # the next unit is the other speaker's tag
    after_pause: bool  # the prefix ends with a pause
    speaker: str  # the digit of the speaker holding the floor


def points(text: str, rng: random.Random) -> list[Point]:
    """Switch points and an equal number of within-turn points (half after a pause) of one line."""
    head, _, body = text.partition("Transcript:")
    units = body.split()
    switches, after_pause, after_word = [], [], []
    speaker, words_in_turn = None, 0
    for i, unit in enumerate(units):
        prefix = head + "Transcript: " + " ".join(units[:i])
        tag = TAG_RE.fullmatch(unit)
        if tag:
            if speaker is not None and tag.group(1) != speaker:
                switches.append(Point(prefix, True, PAUSE_RE.fullmatch(units[i - 1]) is not None, speaker))
            speaker, words_in_turn = tag.group(1), 0
            continue
        if speaker is not None and words_in_turn > 0:
            previous_is_pause = PAUSE_RE.fullmatch(units[i - 1]) is not None
            (after_pause if previous_is_pause else after_word).append(Point(prefix, False, previous_is_pause, speaker))
        words_in_turn += 1
    n = len(switches)
    n_pause = min(len(after_pause), n // 2 + n % 2)
    chosen = rng.sample(after_pause, n_pause)
    chosen += rng.sample(after_word, min(len(after_word), n - n_pause))
    return switches + chosen


def predicted_switch(continuation: str, speaker: str) -> bool:
    return any(m.group(1) != speaker for m in PREDICTED_TAG_RE.finditer(continuation))


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Mann-Whitney AUC (ties count half); None without both classes."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def prf(pred: list[bool], labels: list[bool]) -> dict:
    tp = sum(p and y for p, y in zip(pred, labels, strict=True))
    fp = sum(p and not y for p, y in zip(pred, labels, strict=True))
    fn = sum(y and not p for p, y in zip(pred, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def predict(model, tok, prompts: list[str], batch_size: int, max_length: int) -> tuple[list[str], list[float]]:
    """Greedy 3-token continuations and p(" S") at the point, batched with left padding."""
    import torch
    from transformers import GenerationConfig

    from rtchat.nodes.agent.lm import turn_switch_id

    s_id = turn_switch_id(tok)
    tok.padding_side, tok.truncation_side = "left", "left"
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id, output_scores=True, return_dict_in_generate=True)
    texts, probs = [], []
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_length).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, generation_config=gen)
        probs += torch.softmax(out.scores[0].float(), -1)[:, s_id].tolist()
        for row in out.sequences[:, enc["input_ids"].shape[1] :].tolist():
            texts.append(tok.decode(row, skip_special_tokens=True))  # a tag at the start matches with or without its space
    return texts, probs


def evaluate(model, tok, lines: list[str], num_examples: int, seed: int, batch_size: int = 8, max_length: int = 512) -> dict:
    rng = random.Random(seed)
    sample = rng.sample(lines, min(num_examples, len(lines)))
    pts = [p for line in sample for p in points(line, rng)]
    if not pts:
        raise EvalError("no switch points in the sampled lines (each needs at least two speakers)")
    texts, probs = predict(model, tok, [p.prefix for p in pts], batch_size, max_length)
    labels = [p.switch for p in pts]
    pred = [predicted_switch(t, p.speaker) for t, p in zip(texts, pts, strict=True)]
    idx = [i for i, p in enumerate(pts) if p.after_pause]
    after = prf([pred[i] for i in idx], [labels[i] for i in idx])
    scores = prf(pred, labels)
    return {
        "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"], "auc": auc(probs, labels),
        "f1_after_pause": after["f1"] if idx else None,
        "counts": {"lines": len(sample), "points": len(pts), "switch": sum(labels), "within_turn": len(pts) - sum(labels),
                   "after_pause": len(idx), "after_pause_switch": sum(labels[i] for i in idx),
                   "tp": scores["tp"], "fp": scores["fp"], "fn": scores["fn"]},
        "examples": [{"prefix_end": p.prefix[-60:], "switch": p.switch, "continuation": t, "p_switch": q}
                     for p, t, q in list(zip(pts, texts, probs, strict=True))[:10]],
    }


# -------------------------------------------------------------------- model resolution and CLI


def resolve_model(spec: str):
    """(model, tokenizer) in eval mode on the CPU/GPU: embedded-base, embedded (base + the
    project's adapter), a folder, a hub id, or a peft adapter folder (its base is loaded, the
    adapter merged)."""
    import torch

    from rtchat.configs.models import agent_adapter_dir
    from rtchat.nodes.agent.lm import LoadError, load_model, resolve_device, resolve_dtype

    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device) if device != "cpu" else torch.float32
    base, adapter = spec, ""
    if spec == EMBEDDED_BASE:
        base = "embedded:smollm2-135m"
    elif spec == EMBEDDED:
        adapter_dir = agent_adapter_dir()
        if not (adapter_dir / "adapter_config.json").is_file():
            raise EvalError(f"model 'embedded': no project adapter at {adapter_dir}; make one with "
                            f"'rtchat train --model embedded-base --method lora --data DATA --out {adapter_dir}', "
                            "or use --model embedded-base")
        base, adapter = "embedded:smollm2-135m", str(adapter_dir)
    elif (Path(spec).expanduser() / "adapter_config.json").is_file():
        adapter = str(Path(spec).expanduser())
        base = json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    try:
        model, tok = load_model(base, adapter, device, dtype)
    except LoadError as exc:
        raise EvalError(str(exc)) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def configure(parser: argparse.ArgumentParser) -> None:
    """The options every ``rtchat eval`` over transcript lines takes (switch, ppl)."""
    parser.add_argument("--model", required=True,
                        help="embedded-base, embedded (+ project adapter), folder, hub id or adapter folder")
    parser.add_argument("--data", required=True, help="a file (or folder of *.txt) of transcript lines")
    parser.add_argument("--num-examples", type=int, default=50, help="lines sampled (default 50)")
    parser.add_argument("--json", required=True, help="write the report here")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    parser.add_argument("--max-length", type=int, default=512, help="prompt tokens, cut from the left (default 512)")


def run_eval(args: argparse.Namespace, name: str, evaluate_fn, headline: tuple[str, ...]) -> int:
    """Load data and model, evaluate, write the JSON report (with model, seed, data hash and
    config) atomically and print the headline figures; 1 with a message on bad data/model."""
    from rtchat.configs import write_atomic
    from rtchat.train.data import DataError, data_files, read_lines, sha256_files

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        files = data_files(args.data)
        lines = read_lines(files)
        model, tok = resolve_model(args.model)
        report = evaluate_fn(model, tok, lines, args.num_examples, args.seed, args.batch_size, args.max_length)
    except (DataError, EvalError) as exc:
        print(f"rtchat eval {name}: {exc}")
        return 1
    digest = sha256_files(files)
    report |= {"model": args.model, "seed": args.seed, "data_sha256": digest}
    report["config"] = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    report["config"]["data_sha256"] = digest
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in headline}))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_eval(args, "switch", evaluate, ("precision", "recall", "f1", "auc", "f1_after_pause"))
