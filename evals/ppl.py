"""``rtchat eval ppl``: perplexity of real vs inserted tags and pauses (a simplified form of the
reference's table 4; lora-trial.md §3a measured the same thing).

For N sampled lines (``random.Random(seed).sample``; every line must pass ``parse_line``), the
transcript is split on whitespace into units (a tag ``S2:``, a pause ``(0.4)`` or a word) and four
kinds of cases are scored, each as the tokens of `` <unit>`` appended to the real prefix (the line
up to that point, no trailing space):

- ``trp_pos``: every real speaker tag that changes the speaker (the first tag of the line is not
  scored; a tag repeating the current speaker is not scored either);
- ``trp_neg``: the other speaker's tag (``S2`` while S1 holds the floor, ``S1`` otherwise) inserted
  at a mid-clause word boundary. At most min(#trp_pos of the line, 8) per line, drawn at random;
- ``pause_pos``: every real pause ``(x.y)``;
- ``pause_neg``: a pause inserted at a mid-clause word boundary, reusing the values of the line's
  real pauses in order (so the durations match the positives). At most min(#pause_pos, 8) per line.

A mid-clause word boundary is a point inside a turn where the previous unit is a word (not a tag,
not a pause, not ending in ``.``, ``?`` or ``!``) and the next real unit is a word; so the previous
word is not followed by a pause and no tag comes next.

Perplexity = exp(mean NLL over all scored tokens of the category), pooled over lines. Each line
takes two forward passes (``evals.tree``): the line itself scores every positive, and every
negative is a branch over the line's KV cache. A line longer than ``--max-length`` tokens loses
its beginning (as in training), and cases there are not scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import re

from rtchat.evals.common import EvalError, configure_common, run_eval

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"S(\d+):")
PAUSE_RE = re.compile(r"\(\d*\.\d*\)")
CLAUSE_END = (".", "?", "!")
MAX_NEG_PER_LINE = 8
CATEGORIES = ("trp_pos", "trp_neg", "pause_pos", "pause_neg")


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    category: str  # one of CATEGORIES
    prefix: str  # the real line up to the point, no trailing space
    target: str  # the scored text, with its leading space (" S2:", " (0.4)")
    unit: int  # index of the transcript unit that follows the point (a positive's target is that unit)


def _is_word(unit: str) -> bool:
    return TAG_RE.fullmatch(unit) is None and PAUSE_RE.fullmatch(unit) is None


def cases(text: str, rng: random.Random) -> list[Case]:
    """The positive and negative cases of one line (see the module docstring)."""
    head, _, body = text.partition("Transcript:")
    units = body.split()
    trp_pos, pause_pos, boundaries = [], [], []  # boundaries: (index, speaker)
    pause_values = []
    speaker = None
    for i, unit in enumerate(units):
        prefix = head + "Transcript: " + " ".join(units[:i])
        prefix = prefix.rstrip()
        tag = TAG_RE.fullmatch(unit)
        if tag:
            if speaker is not None and tag.group(1) != speaker:
                trp_pos.append(Case("trp_pos", prefix, " " + unit, i))
            speaker = tag.group(1)
            continue
        if PAUSE_RE.fullmatch(unit):
            pause_pos.append(Case("pause_pos", prefix, " " + unit, i))
            pause_values.append(unit)
            continue
        prev = units[i - 1] if i else ""
        if speaker is not None and i and _is_word(prev) and not prev.endswith(CLAUSE_END):
            boundaries.append((prefix, speaker, i))
    n_trp = min(len(trp_pos), MAX_NEG_PER_LINE, len(boundaries))
    trp_neg = [Case("trp_neg", p, f" S{'2' if s == '1' else '1'}:", i) for p, s, i in rng.sample(boundaries, n_trp)]
    n_pause = min(len(pause_pos), MAX_NEG_PER_LINE, len(boundaries))
    pause_neg = [Case("pause_neg", p, " " + pause_values[k % len(pause_values)], i)
                 for k, (p, _, i) in enumerate(rng.sample(boundaries, n_pause))]
    return trp_pos + trp_neg + pause_pos + pause_neg


def score(model, tok, line: str, line_cases: list[Case], max_length: int) -> list[tuple[Case, float, int]]:
    """(case, summed NLL, token count) for the cases of one line that fall in its kept part."""
    from rtchat.evals.tree import LineScorer

    scorer = LineScorer(model, tok, line, max_length)
    out, negatives = [], []
    for c in line_cases:
        j = scorer.point_token(c.unit)
        if j is None:
            continue
        if c.category.endswith("_pos"):
            out.append((c, *scorer.unit_nll(c.unit)))
        else:
            negatives.append((c, j, tok(c.target, add_special_tokens=False)["input_ids"]))
    branch_logp = scorer.branches([j for _, j, _ in negatives], [ids[:-1] for _, _, ids in negatives])
    for (c, j, ids), lp in zip(negatives, branch_logp, strict=True):
        nll = -float(scorer.next_logp(j)[ids[0]]) - sum(float(lp[r, t]) for r, t in enumerate(ids[1:]))
        out.append((c, nll, len(ids)))
    return out


def evaluate(model, tok, lines: list[str], num_examples: int, seed: int, max_length: int = 512) -> dict:
    from tqdm.auto import tqdm

    from rtchat.datasets.lines import LineError, parse_line

    for n, line in enumerate(lines, 1):
        try:
            parse_line(line, f"line {n}")
        except LineError as exc:
            raise EvalError(str(exc)) from None
    rng = random.Random(seed)
    sample = rng.sample(lines, min(num_examples, len(lines)))
    per_line = [(line, cases(line, rng)) for line in sample]
    if not any(cs for _, cs in per_line):
        raise EvalError("no tags or pauses to score in the sampled lines")
    nll = dict.fromkeys(CATEGORIES, 0.0)
    tokens = dict.fromkeys(CATEGORIES, 0)
    count = dict.fromkeys(CATEGORIES, 0)
    for line, line_cases in tqdm(per_line, desc="eval ppl", unit="line"):
        for c, s, n in score(model, tok, line, line_cases, max_length):
            nll[c.category] += s
            tokens[c.category] += n
            count[c.category] += 1
    report = {f"ppl_{k}": (math.exp(nll[k] / tokens[k]) if tokens[k] else None) for k in CATEGORIES}
    report["counts"] = {"lines": len(sample), **count, **{f"{k}_tokens": tokens[k] for k in CATEGORIES}}
    return report


def configure(parser: argparse.ArgumentParser) -> None:
    configure_common(parser)  # the options of every eval over transcript lines, and:
    parser.add_argument("--reference", action="store_true",
                        help="the reference's table 4 instead (every real switch and pause; every other speaker's tag "
                             "and (0.2)/(0.5)/(1.0) before every word; exp of the mean per-example NLL); also writes "
                             "evals_output_ppl_multiple.csv next to --json. rtchat eval all does the same with workers")
    parser.add_argument("--negatives", type=int, default=0,
                        help="with --reference: inserted tags and pauses scored per line, each (default 0 = all)")


def run(args: argparse.Namespace) -> int:
    headline = tuple(f"ppl_{k}" for k in CATEGORIES)
    if not args.reference:
        return run_eval(args, "ppl", evaluate, headline)

    def evaluate_reference(model, tok, lines, num_examples, seed, max_length):
        from tqdm.auto import tqdm

        sample = random.Random(seed).sample(lines, min(num_examples, len(lines))) if num_examples > 0 else lines
        per_line = [score_reference(model, tok, line, max_length, 64, args.negatives, f"{seed}:{k}")
                    for k, line in enumerate(tqdm(sample, desc="eval ppl", unit="line"))]
        row, counts = reference_table(per_line)
        return {k: (None if math.isnan(v) else v) for k, v in row.items()} | {"counts": {"lines": len(sample), **counts}}

    rc = run_eval(args, "ppl", evaluate_reference, headline)
    if rc == 0:
        import json
        from pathlib import Path

        from rtchat.common.files import write_atomic

        report = json.loads(Path(args.json).read_text())
        cells = ["" if report[c] is None else repr(float(report[c])) for c in REFERENCE_COLUMNS]
        path = Path(args.json).parent / "evals_output_ppl_multiple.csv"
        write_atomic(path, ",".join(REFERENCE_COLUMNS) + "\n" + ",".join(cells) + "\n")
        print(f"wrote {path}")
    return rc


# -------------------------------------------------------------------- the reference's table 4

REF_TAG_RE = re.compile(r"S\d+(?=:)")
REF_PAUSE_RE = re.compile(r"(?:<p> )?\((\d*?\.\d*?)\)")
PREFIX_SPEAKER_RE = re.compile(r"(S\d+) \(name:")
NEGATIVE_PAUSES = (" (0.2)", " (0.5)", " (1.0)")
REFERENCE_COLUMNS = ("ppl_trp_pos", "ppl_trp_neg", "ppl_pause_pos", "ppl_pause_neg")


@dataclasses.dataclass(frozen=True, slots=True)
class RefExample:
    category: str  # one of CATEGORIES
    unit: int  # the whitespace word of the transcript the target is placed before
    target: str  # " S2:", " (0.4)"


def reference_examples(line: str) -> list[RefExample]:
    """The reference's examples of one line (spec §3.1, §4.1): every real change of speaker and
    every other prefix speaker's tag before every word; every real pause, and (0.2), (0.5),
    (1.0) before every word that neither is nor follows a speaker tag."""
    head, _, body = line.partition("Transcript:")
    words = body.split()
    out = []
    speakers = PREFIX_SPEAKER_RE.findall(head)
    if len({m.group() for w in words if (m := REF_TAG_RE.match(w))}) >= 2:
        current = None
        for i, w in enumerate(words):
            tag = REF_TAG_RE.match(w)
            if current is not None:
                if tag and tag.group() != current:
                    out.append(RefExample("trp_pos", i, f" {tag.group()}:"))
                elif not tag:
                    out += [RefExample("trp_neg", i, f" {s}:") for s in speakers if s != current]
            if tag:
                current = tag.group()
    if REF_PAUSE_RE.search(body):
        for i, w in enumerate(words):
            m = REF_PAUSE_RE.match(w)
            if m:
                out.append(RefExample("pause_pos", i, " " + m.group()))
            elif not REF_TAG_RE.match(w) and not (i and REF_TAG_RE.match(words[i - 1])):
                out += [RefExample("pause_neg", i, p) for p in NEGATIVE_PAUSES]
    return out


def _marker_mean(ids: list[int], nll: list[float], marker: int, target: str) -> float:
    """Mean NLL from the last marker token of the target to its end (spec §3.2)."""
    if marker not in ids:
        raise EvalError(f"the marker token {marker} is not among the tokens {ids} of {target!r} for this tokenizer")
    r = len(ids) - 1 - ids[::-1].index(marker)
    return sum(nll[r:]) / (len(ids) - r)


def sample_negatives(examples: list[RefExample], n: int, key: str) -> list[RefExample]:
    """At most n negatives of each kind (drawn with a seed from ``key``), every positive; in order."""
    if n <= 0:
        return examples
    keep = set()
    for category in ("trp_neg", "pause_neg"):
        idx = [k for k, e in enumerate(examples) if e.category == category]
        if len(idx) > n:
            idx = random.Random(f"negatives:{key}:{category}").sample(idx, n)
        keep.update(idx)
    return [e for k, e in enumerate(examples) if k in keep or e.category.endswith("_pos")]


def score_reference(model, tok, line: str, max_length: int, batch: int = 64, negatives: int = 0,
                    key: str = "") -> dict[str, list[float]]:
    """Per category, the per-example mean NLLs of one line's reference examples that fall in the
    kept part of the line. Real units are read off the line's pass; the rest are branches over
    its cache, ``batch`` at a time (halved on out-of-memory). ``negatives`` > 0 scores only that
    many negatives of each kind (``sample_negatives``; the reference scores all: ~4 per word)."""
    from rtchat.evals.tree import LineScorer
    from rtchat.evals.workers import halving
    from rtchat.nodes.agent.lm import encode_fragment, turn_switch_id

    markers = {"trp": turn_switch_id(tok), "pause": encode_fragment(tok, " (")[0]}
    examples = sample_negatives(reference_examples(line), negatives, key)
    out: dict[str, list[float]] = {k: [] for k in CATEGORIES}
    if not examples:
        return out
    scorer = LineScorer(model, tok, line, max_length)
    words = line.partition("Transcript:")[2].split()
    branches = []
    for e in examples:
        j = scorer.point_token(e.unit)
        if j is None:
            continue
        marker = markers[e.category.split("_")[0]]
        if e.target == " " + words[e.unit]:  # the real unit: its tokens are in the line's pass
            end = scorer.unit_start[e.unit + 1] - scorer.cut if e.unit + 1 < len(words) else len(scorer.ids)
            ids = scorer.ids[j:end]
            nll = [-float(scorer.logp[j - 1 + r, t]) for r, t in enumerate(ids)]
            out[e.category].append(_marker_mean(ids, nll, marker, e.target))
        else:
            branches.append((e, j, tok(e.target, add_special_tokens=False)["input_ids"], marker))

    def run(chunk):
        logps = scorer.branches([j for _, j, _, _ in chunk], [ids[:-1] for _, _, ids, _ in chunk])
        means = []
        for (e, j, ids, marker), lp in zip(chunk, logps, strict=True):
            nll = [-float(scorer.next_logp(j)[ids[0]])] + [-float(lp[r, t]) for r, t in enumerate(ids[1:])]
            means.append((e.category, _marker_mean(ids, nll, marker, e.target)))
        return means

    for category, value in halving(run, branches, batch, "branches"):
        out[category].append(value)
    return out


def reference_table(per_line: list[dict[str, list[float]]]) -> tuple[dict[str, float], dict[str, int]]:
    """(``ppl_<category>`` = exp(mean of per-example mean NLLs), example counts) over the lines,
    pooled in line order; NaN for a category with no example."""
    row, counts = {}, {}
    for k in CATEGORIES:
        values = [v for d in per_line for v in d[k]]
        counts[k] = len(values)
        row[f"ppl_{k}"] = math.exp(sum(values) / len(values)) if values else math.nan
    return row, counts
