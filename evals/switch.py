"""``rtchat eval switch``: the quick turn-taking check (lora-trial.md §3b).

For N sampled lines, the model sees the line up to a point and decodes 3 tokens greedily:
- switch points: before every speaker tag that changes the speaker (the prefix ends after the
  turn-final pause where one is written);
- within-turn points: as many as there are switch points in the line, half of them right after a
  within-turn pause, the rest after a word, never straight after a tag.
A switch is predicted when the 3 tokens hold a tag of the other speaker (`` S2`` after S1's
words). AUC ranks the points by p(" S") at the point. ``f1_after_pause`` counts only the points
right after a pause. ``ci95`` gives 95 % bootstrap intervals of both F1s, resampling whole lines
(a line's points share a conversation): on 50 lines they span several hundredths, so compare
models on the same lines and seed, and on more lines when a difference is small.
``auc_after_pause`` ranks the after-pause points alone. ``always_switch`` holds the F1s of calling
every point a switch, the floor to beat: after a pause most points are switches, so that floor is
high. ``after_pause_by_previous_word`` splits the after-pause points by the word before the pause
(filler, function word, content word): holds kept, switches found, and the share of holds among
all such points of the sampled lines, the odds a model can learn from the words alone.

Each line takes three forward passes whatever its number of points (``evals.tree``): the line
itself (every point's first token and p(" S")), then every point's second and third greedy token
as branches over the line's KV cache. The result equals greedy ``generate`` on each prefix
(tested); a line longer than ``--max-length`` tokens loses its beginning, and points there are
not scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import re

from rtchat.common.stats import BOOTSTRAP_RESAMPLES, bootstrap
from rtchat.datasets.synthetic import FILLERS, FUNCTION_WORDS
from rtchat.evals.common import EvalError, configure_common, resolve_model, run_eval

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"S(\d+):")
PAUSE_RE = re.compile(r"\(\d+(?:\.\d+)?\)")
PREDICTED_TAG_RE = re.compile(r"(?:^|\s)S(\d)(?::|\s|$)")
NEW_TOKENS = 3

@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    prefix: str  # the line up to the point, no trailing space
    unit: int  # index of the transcript unit that follows the point
    switch: bool  # the next unit is the other speaker's tag
    after_pause: bool  # the prefix ends with a pause
    speaker: str  # the digit of the speaker holding the floor


def points(text: str, rng: random.Random) -> list[Point]:
    """Switch points and an equal number of within-turn points (half after a pause) of one line."""
    return choose(candidates(text), rng)


Candidates = tuple[list[Point], list[Point], list[Point]]


def choose(cands: Candidates, rng: random.Random) -> list[Point]:
    """The switch points of one line's ``candidates`` and as many within-turn points, half of
    them right after a pause where the line has enough."""
    switches, after_pause, after_word = cands
    n = len(switches)
    n_pause = min(len(after_pause), n // 2 + n % 2)
    chosen = rng.sample(after_pause, n_pause)
    chosen += rng.sample(after_word, min(len(after_word), n - n_pause))
    return switches + chosen


def candidates(text: str) -> Candidates:
    """Every point of one line: (switch points, within-turn points right after a pause, the other
    within-turn points), in line order."""
    head, _, body = text.partition("Transcript:")
    units = body.split()
    switches, after_pause, after_word = [], [], []
    speaker, words_in_turn = None, 0
    for i, unit in enumerate(units):
        prefix = head + "Transcript: " + " ".join(units[:i])
        tag = TAG_RE.fullmatch(unit)
        if tag:
            if speaker is not None and tag.group(1) != speaker:
                switches.append(Point(prefix, i, True, PAUSE_RE.fullmatch(units[i - 1]) is not None, speaker))
            speaker, words_in_turn = tag.group(1), 0
            continue
        if speaker is not None and words_in_turn > 0:
            previous_is_pause = PAUSE_RE.fullmatch(units[i - 1]) is not None
            (after_pause if previous_is_pause else after_word).append(Point(prefix, i, False, previous_is_pause, speaker))
        words_in_turn += 1
    return switches, after_pause, after_word


def previous_word_kind(prefix: str) -> str:
    """For a point right after a pause: is the word before the pause a filler (``um``, ``uh``), a
    function word (the corpus's list: articles, pronouns, prepositions, conjunctions, auxiliaries)
    or a content word. The word tells a hold from a turn end better than the pause: a speaker who
    pauses after "the" or "um" is rarely done."""
    word = prefix.rsplit(maxsplit=2)[-2].lower()
    return "filler" if word in FILLERS else "function_word" if word in FUNCTION_WORDS else "content_word"


WORD_KINDS = ("filler", "function_word", "content_word")


def hold_share(per_line: list[Candidates]) -> dict[str, dict]:
    """Over every point right after a pause in the lines (their ``candidates``, not only the
    sampled points), how many are holds and how many switches, by the word before the pause: the
    odds a model learns."""
    out = {kind: {"holds": 0, "switches": 0} for kind in WORD_KINDS}
    for switches, after_pause, _ in per_line:
        for p in [p for p in switches if p.after_pause] + after_pause:
            out[previous_word_kind(p.prefix)]["switches" if p.switch else "holds"] += 1
    for c in out.values():
        total = c["holds"] + c["switches"]
        c["hold_share"] = c["holds"] / total if total else None
    return out


def by_previous_word(pts: list[Point], pred: list[bool], lines_share: dict | None = None) -> dict:
    """The after-pause points by the word before the pause: holds and how many were kept (no
    switch predicted), switches and how many were found; with ``lines_share`` (``hold_share`` of
    the sampled lines) also the share of holds among all such points in those lines."""
    out = {kind: {"holds": 0, "holds_kept": 0, "switches": 0, "switches_found": 0} for kind in WORD_KINDS}
    for p, yhat in zip(pts, pred, strict=True):
        if not p.after_pause:
            continue
        c = out[previous_word_kind(p.prefix)]
        if p.switch:
            c["switches"] += 1
            c["switches_found"] += yhat
        else:
            c["holds"] += 1
            c["holds_kept"] += not yhat
    if lines_share is not None:
        for kind, c in out.items():
            c["hold_share_in_lines"] = lines_share[kind]["hold_share"]
    return out


def predicted_switch(continuation: str, speaker: str) -> bool:
    return any(m.group(1) != speaker for m in PREDICTED_TAG_RE.finditer(continuation))


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Mann-Whitney AUC (ties count half); None without both classes."""
    n_pos = sum(bool(y) for y in labels)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    ranked = sorted(zip(scores, labels, strict=True), key=lambda sy: sy[0])
    wins, negatives_below, k = 0.0, 0, 0
    while k < len(ranked):  # one group of equal scores at a time
        end = k
        while end < len(ranked) and ranked[end][0] == ranked[k][0]:
            end += 1
        pos = sum(bool(y) for _, y in ranked[k:end])
        wins += pos * (negatives_below + 0.5 * (end - k - pos))
        negatives_below += end - k - pos
        k = end
    return wins / (n_pos * n_neg)


def prf(pred: list[bool], labels: list[bool]) -> dict:
    tp = sum(p and y for p, y in zip(pred, labels, strict=True))
    fp = sum(p and not y for p, y in zip(pred, labels, strict=True))
    fn = sum(y and not p for p, y in zip(pred, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def predict(model, tok, line: str, pts: list[Point], max_length: int) -> list[tuple[Point, str, float]]:
    """(point, greedy 3-token continuation, p(" S")) for the points of one line that fall in its
    kept part; three forward passes (see the module docstring)."""
    import torch

    from rtchat.evals.tree import LineScorer
    from rtchat.nodes.agent.lm import turn_switch_id

    s_id = turn_switch_id(tok)
    scorer = LineScorer(model, tok, line, max_length)
    kept = [(p, scorer.point_token(p.unit)) for p in pts]
    kept = [(p, j) for p, j in kept if j is not None]
    if not kept:
        return []
    first = torch.stack([scorer.next_logp(j) for _, j in kept])
    probs = first[:, s_id].exp().tolist()
    tokens = [[t] for t in first.argmax(-1).tolist()]
    for _ in range(NEW_TOKENS - 1):
        logps = scorer.branches([j for _, j in kept], tokens)
        for ts, lp in zip(tokens, logps, strict=True):
            ts.append(int(lp[-1].argmax()))
    out = []
    for (p, _), ts, q in zip(kept, tokens, probs, strict=True):
        if tok.eos_token_id in ts:  # generate stops at the end of text
            ts = ts[: ts.index(tok.eos_token_id)]
        out.append((p, tok.decode(ts, skip_special_tokens=True), q))  # a tag at the start matches with or without its space
    return out


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def bootstrap_f1(counts: list[tuple[int, int, int]], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95 % interval of F1 from each line's (tp, fp, fn)."""
    return bootstrap(counts, lambda c: _f1(*c), seed, resamples)


def _line_counts(pred: list[bool], labels: list[bool], line_of: list[int], keep: list[bool]) -> dict[int, list[int]]:
    """Each line's [tp, fp, fn] over the kept points."""
    by_line: dict[int, list[int]] = {}
    for p, y, line, k in zip(pred, labels, line_of, keep, strict=True):
        c = by_line.setdefault(line, [0, 0, 0])
        if k:
            c[0] += p and y
            c[1] += p and not y
            c[2] += y and not p
    return by_line


def score(results: list[tuple[Point, str, float]], lines: int, line_of: list[int] | None = None,
          lines_share: dict | None = None) -> dict:
    """The report from (point, continuation, p(" S")) triples; with ``line_of`` (each point's line)
    also ``ci95``: bootstrap intervals of ``f1`` and ``f1_after_pause`` over lines; with
    ``lines_share`` (``hold_share`` of the sampled lines) it goes into ``after_pause_by_previous_word``."""
    if not results:
        raise EvalError("no switch points in the sampled lines (each needs at least two speakers)")
    pts = [p for p, _, _ in results]
    labels = [p.switch for p in pts]
    pred = [predicted_switch(t, p.speaker) for p, t, _ in results]
    idx = [i for i, p in enumerate(pts) if p.after_pause]
    after = prf([pred[i] for i in idx], [labels[i] for i in idx])
    after_switch = sum(labels[i] for i in idx)
    scores = prf(pred, labels)
    ci95 = None
    if line_of is not None:
        after_mask = [p.after_pause for p in pts]
        ci95 = {"f1": bootstrap_f1(list(_line_counts(pred, labels, line_of, [True] * len(pts)).values())),
                "f1_after_pause": bootstrap_f1(list(_line_counts(pred, labels, line_of, after_mask).values()))
                if idx else None,
                "resamples": BOOTSTRAP_RESAMPLES, "unit": "line"}
    return {
        "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
        "auc": auc([q for _, _, q in results], labels),
        "f1_after_pause": after["f1"] if idx else None,
        "auc_after_pause": auc([results[i][2] for i in idx], [labels[i] for i in idx]),
        "ci95": ci95,
        "always_switch": {"f1": _f1(sum(labels), len(labels) - sum(labels), 0),
                          "f1_after_pause": _f1(after_switch, len(idx) - after_switch, 0) if idx else None},
        "after_pause_by_previous_word": by_previous_word(pts, pred, lines_share),
        "counts": {"lines": lines, "points": len(pts), "switch": sum(labels), "within_turn": len(pts) - sum(labels),
                   "after_pause": len(idx), "after_pause_switch": after_switch,
                   "tp": scores["tp"], "fp": scores["fp"], "fn": scores["fn"]},
        "examples": [{"prefix_end": p.prefix[-60:], "switch": p.switch, "continuation": t, "p_switch": q}
                     for p, t, q in results[:10]],
    }


def gain(a: list[tuple[Point, str, float]], a_line: list[int], b: list[tuple[Point, str, float]],
         b_line: list[int]) -> dict:
    """F1 of ``a`` minus F1 of ``b`` on the points both scored (same lines and seed), overall and
    after a pause, with a paired bootstrap interval over lines."""
    b_pred = {(line, p.unit): predicted_switch(t, p.speaker) for (p, t, _), line in zip(b, b_line, strict=True)}
    rows = [(line, p, predicted_switch(t, p.speaker), b_pred[line, p.unit])
            for (p, t, _), line in zip(a, a_line, strict=True) if (line, p.unit) in b_pred]
    if not rows:
        raise EvalError("the model and its baseline scored no point in common (their tokenizers cut the lines "
                        "differently; raise --max-length)")

    lines = [line for line, _, _, _ in rows]
    labels = [p.switch for _, p, _, _ in rows]

    def paired(keep: list[bool]) -> tuple[float | None, list[float] | None]:
        a_counts = _line_counts([pa for _, _, pa, _ in rows], labels, lines, keep)
        b_counts = _line_counts([pb for _, _, _, pb in rows], labels, lines, keep)
        counts = [a_counts[line] + b_counts[line] for line in a_counts]  # [tp, fp, fn] of a, then of b
        if not any(y and k for y, k in zip(labels, keep, strict=True)):
            return None, None

        def stat(c: list[int]) -> float:
            return _f1(*c[:3]) - _f1(*c[3:])

        return stat([sum(col) for col in zip(*counts, strict=True)]), bootstrap(counts, stat)

    f1, f1_ci = paired([True] * len(rows))
    after, after_ci = paired([p.after_pause for _, p, _, _ in rows])
    return {"f1": f1, "f1_after_pause": after, "ci95": {"f1": f1_ci, "f1_after_pause": after_ci}, "points": len(rows)}


def _collect(model, tok, per_line: list[tuple[str, list[Point]]], max_length: int, desc: str):
    from tqdm.auto import tqdm

    results, line_of = [], []
    for k, (line, pts) in enumerate(tqdm(per_line, desc=desc, unit="line")):
        scored = predict(model, tok, line, pts, max_length)
        results += scored
        line_of += [k] * len(scored)
    return results, line_of


def evaluate(model, tok, lines: list[str], num_examples: int, seed: int, max_length: int = 512,
             baseline: tuple[str, object, object] | None = None) -> dict:
    """The report for ``model``; with ``baseline`` = (name, model, tokenizer) also that model's
    report on the same points (``baseline``) and the paired difference (``gain``)."""
    rng = random.Random(seed)
    sample = rng.sample(lines, min(num_examples, len(lines)))
    cands = [candidates(line) for line in sample]
    per_line = [(line, choose(c, rng)) for line, c in zip(sample, cands, strict=True)]
    results, line_of = _collect(model, tok, per_line, max_length, "eval switch")
    share = hold_share(cands)
    report = score(results, len(sample), line_of, share)
    if baseline is not None:
        name, base_model, base_tok = baseline
        base_results, base_line_of = _collect(base_model, base_tok, per_line, max_length, "eval switch (baseline)")
        report["baseline"] = {"model": name} | score(base_results, len(sample), base_line_of, share)
        report["gain"] = gain(results, line_of, base_results, base_line_of)
    return report


# -------------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of eval switch: those every eval over transcript lines takes, and --baseline."""
    configure_common(parser)
    parser.add_argument("--baseline", default=None,
                        help="a second model (e.g. embedded-base) scored on the same points; the JSON gets its report "
                             "under 'baseline' and the paired difference with a bootstrap interval under 'gain'")


def run(args: argparse.Namespace) -> int:
    headline = ("precision", "recall", "f1", "auc", "f1_after_pause")
    if not args.baseline:
        return run_eval(args, "switch", evaluate, headline)

    def paired(model, tok, lines, num_examples, seed, max_length):
        base_model, base_tok = resolve_model(args.baseline, weights=args.weights)
        return evaluate(model, tok, lines, num_examples, seed, max_length, (args.baseline, base_model, base_tok))

    return run_eval(args, "switch", paired, (*headline, "gain"))
