"""``rtchat eval relevance``: does the model prefer the reply that was really given?

Response selection (the 1-in-10 recall of dialogue-response selection, Lowe et al. 2015) on
held-out dialogues. At an agent turn the model scores the turn that really came next against
``DISTRACTORS`` turns taken from other dialogues; a model whose replies answer what was said ranks
the true one first. Timing, diversity and genericness (the reference's table 5) cannot see this:
a reply can pass all three and ignore the user.

**Dialogues.** Lines are windows of dialogues (``datasets.splits.windows``): consecutive lines
with the same header whose bodies overlap are one dialogue (``dialogue_ids``).

**Contexts.** ``--num-examples N`` dialogues are drawn (``random.Random(seed).sample``), and in
each up to ``--per-dialogue`` agent turns (also drawn): a turn of the agent (``S2``) that answers
a turn of the user (``S1``) and is followed by another tag (the window's last turn may be cut);
both turns have at least ``MIN_WORDS`` words — a backchannel (``mm-hmm``) has nothing to select,
and an agent turn after the user's backchannel goes on with what the agent was saying instead of
answering. A turn found in
two overlapping windows counts once, in the window where more precedes it. The context is the
line up to and including the agent's tag (``… (0.3) S2:``), tokenised unit by unit as the other
evals do (``evals.tree``) and cut from the left to ``--max-length`` tokens, as in training.

**Candidates.** The turn's words (pauses dropped: the score is about what is said, not when),
its first ``MAX_WORDS`` at most, and ``DISTRACTORS`` agent turns of other dialogues of the same
file, made the same way, with other texts, from the same length band (``BANDS``, by word count;
neighbouring bands join when one has too few), drawn with ``random.Random(f"{seed}:{line}:
{unit}")`` — the same seed gives the same distractors, whatever the shards.

**Score.** Mean log-likelihood per token of a candidate (each word as `` word``) after the
context. The true turn's rank among the ten counts ties at their expected value under a random
order: recall 1/(1 + ties) when no candidate scores higher, the reciprocal rank averaged over the
places the tie spans. Chance: recall 0.1, MRR 0.293. Intervals: 95 % bootstrap over dialogues
(``common.stats.bootstrap``, seeded); with ``--baseline`` both models score the same candidates
and ``gain`` holds the paired difference.

**Cost.** One forward pass per context (``decoding.Runner``, whose cache keeps the longest prefix
shared with the previous context) and one for all ten candidates as branches over its cache
(``decoding.run_branches``).

**Replies.** ``--replies R``: each model's greedy reply (up to ``REPLY_TOKENS`` tokens, stopping
at the next speaker tag) at the first R contexts, to read beside the true turn.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import re
import time
from pathlib import Path

from rtchat.common.stats import BOOTSTRAP_RESAMPLES, bootstrap
from rtchat.evals.common import EvalError, check_data, check_model, load_parts, parse_shard

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"S(\d):")
PAUSE_RE = re.compile(r"\(\d*\.\d*\)")
AGENT, USER = "2", "1"  # the agent is S2 (nodes/agent/transcript.py)
DISTRACTORS = 9
MIN_WORDS = 3
MAX_WORDS = 24
BANDS = ((3, 5), (6, 11), (12, 23), (24, 24))  # word counts of a candidate, inclusive
REPLY_TOKENS = 40
CHANCE = {"recall_at_1_of_10": 0.1, "mrr": sum(1 / r for r in range(1, 11)) / 10}


@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    line: int  # index of the line in the data
    unit: int  # index of the transcript unit after the agent's tag: the context ends before it
    text: str  # the candidate: the turn's words, pauses dropped, at most MAX_WORDS


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    line: str  # the line the turn is in
    turn: Turn
    candidates: tuple[str, ...]  # the true turn first, then the distractors
    widened: bool  # the distractors came from neighbouring length bands too

    def text(self) -> str:
        """The line up to and including the agent's tag."""
        head, _, body = self.line.partition("Transcript:")
        return head + "Transcript: " + " ".join(body.split()[: self.turn.unit])


def dialogue_ids(lines: list[str]) -> list[int]:
    """The dialogue of each line: a line continues the one before when their headers are equal and
    its first words (after its opening tag) occur in that line's body (windows overlap)."""
    out, previous = [], None
    for line in lines:
        head, _, body = line.partition("Transcript:")
        words = body.split()
        same = previous is not None and previous[0] == head and " ".join(words[1:11]) in previous[1]
        out.append(out[-1] if same else (out[-1] + 1 if out else 0))
        previous = (head, " ".join(words))
    return out


def agent_turns(line: str, index: int) -> list[Turn]:
    """The agent turns of one line that answer a user turn (not a backchannel: ``MIN_WORDS`` words
    or more) and are followed by another tag."""
    units = line.partition("Transcript:")[2].split()
    tags = [i for i, u in enumerate(units) if TAG_RE.fullmatch(u)]
    out = []
    for before, tag, after in zip(tags, tags[1:], tags[2:], strict=False):
        if units[before] != f"S{USER}:" or units[tag] != f"S{AGENT}:":
            continue
        asked = [u for u in units[before + 1 : tag] if not PAUSE_RE.fullmatch(u)]
        words = [u for u in units[tag + 1 : after] if not PAUSE_RE.fullmatch(u)][:MAX_WORDS]
        if len(asked) >= MIN_WORDS and len(words) >= MIN_WORDS:
            out.append(Turn(index, tag + 1, " ".join(words)))
    return out


def band(n_words: int) -> int:
    return next(b for b, (lo, hi) in enumerate(BANDS) if lo <= n_words <= hi)


class Pool:
    """Every agent turn of the data by length band: text → the dialogues it occurs in."""

    def __init__(self, turns: list[Turn], dialogue_of: list[int]):
        self.bands: list[dict[str, set[int]]] = [{} for _ in BANDS]
        for t in turns:
            self.bands[band(len(t.text.split()))].setdefault(t.text, set()).add(dialogue_of[t.line])

    def draw(self, turn: Turn, dialogue: int, seed: int) -> tuple[list[str], bool]:
        """DISTRACTORS texts of other dialogues, other than the turn's, from its band (joined by
        the nearest others while too few); and whether the band was widened."""
        own = band(len(turn.text.split()))
        order = sorted(range(len(BANDS)), key=lambda b: (abs(b - own), b))
        eligible: list[str] = []
        for used, b in enumerate(order, 1):
            eligible += [text for text, where in self.bands[b].items() if text != turn.text and dialogue not in where]
            if len(eligible) >= DISTRACTORS:
                return random.Random(f"{seed}:{turn.line}:{turn.unit}").sample(eligible, DISTRACTORS), used > 1
        raise EvalError(f"only {len(eligible)} agent turns of other dialogues with {MIN_WORDS}+ words in the data; "
                        f"each context needs {DISTRACTORS} distractors (use more lines, e.g. a whole test split)")


def contexts(lines: list[str], num_dialogues: int, per_dialogue: int, seed: int) -> list[list[Context]]:
    """The sampled dialogues' contexts: one list per dialogue of the sample, in line order (empty
    when the dialogue has no agent turn)."""
    dialogue_of = dialogue_ids(lines)
    turns = [t for i, line in enumerate(lines) for t in agent_turns(line, i)]
    pool = Pool(turns, dialogue_of)
    by_dialogue: dict[int, dict[str, Turn]] = {}
    for t in turns:  # a turn in two windows: the later unit has more context before it
        kept = by_dialogue.setdefault(dialogue_of[t.line], {})
        if t.text not in kept or t.unit > kept[t.text].unit:
            kept[t.text] = t
    rng = random.Random(seed)
    n_dialogues = dialogue_of[-1] + 1 if lines else 0
    sample = rng.sample(range(n_dialogues), min(num_dialogues, n_dialogues))
    out = []
    for d in sample:
        own = list(by_dialogue.get(d, {}).values())
        chosen = sorted(rng.sample(own, min(per_dialogue, len(own))), key=lambda t: (t.line, t.unit))
        row = []
        for t in chosen:
            distractors, wide = pool.draw(t, d, seed)
            row.append(Context(lines[t.line], t, (t.text, *distractors), wide))
        out.append(row)
    return out


# -------------------------------------------------------------------- scoring


def rank(scores: list[float]) -> tuple[float, float]:
    """(recall at 1, reciprocal rank) of ``scores[0]`` among ``scores``, ties at their expected value."""
    true = scores[0]
    higher = sum(s > true for s in scores[1:])
    ties = sum(s == true for s in scores[1:])
    recall = 1 / (ties + 1) if higher == 0 else 0.0
    return recall, sum(1 / (higher + 1 + t) for t in range(ties + 1)) / (ties + 1)


def context_ids(tok, c: Context, max_length: int) -> list[int]:
    """The context's tokens as ``evals.tree`` makes them (the header, then each unit as `` unit``),
    cut from the left to ``max_length``."""
    head, _, body = c.line.partition("Transcript:")
    ids = list(tok(head + "Transcript:")["input_ids"])
    for u in body.split()[: c.turn.unit]:
        ids += tok(" " + u, add_special_tokens=False)["input_ids"]
    return ids[-max_length:]


def candidate_ids(tok, text: str) -> list[int]:
    return [i for w in text.split() for i in tok(" " + w, add_special_tokens=False)["input_ids"]]


class Scorer:
    """One model: the mean log-likelihood per token of candidates after a context, and greedy replies."""

    def __init__(self, model, tok, max_length: int):
        from rtchat.nodes.agent import decoding
        from rtchat.nodes.agent.lm import turn_switch_id

        self.tok, self.max_length, self.model = tok, max_length, model
        # a sliding-window cache (Gemma 3) cannot be cut back: each candidate then runs on a copy of
        # the context's cache, and nothing is reused from one context to the next
        self.croppable = "sliding_attention" not in (getattr(model.config, "layer_types", None) or ())
        self.runner = decoding.Runner(model) if self.croppable else None
        self.stop = frozenset({turn_switch_id(tok), *([tok.eos_token_id] if tok.eos_token_id is not None else [])})

    def score(self, c: Context) -> list[float]:
        import torch

        from rtchat.nodes.agent import decoding

        ids = [candidate_ids(self.tok, text) for text in c.candidates]
        with torch.inference_mode():
            if self.croppable:
                r = self.runner
                r.sync(context_ids(self.tok, c, self.max_length))
                first = torch.log_softmax(r.logits, -1)
                n = len(r.ids)
                logps = decoding.run_branches(r.model, r.cache, r.cache_kw, [n] * len(ids), [x[:-1] for x in ids])
            else:
                first, logps = self._score_on_copies(context_ids(self.tok, c, self.max_length), ids)
        out = []
        for x, lp in zip(ids, logps, strict=True):
            rest = lp[torch.arange(len(x) - 1), torch.tensor(x[1:], dtype=torch.long)] if len(x) > 1 else lp.new_zeros(0)
            out.append((float(first[x[0]]) + float(rest.sum())) / len(x))
        return out

    def _score_on_copies(self, context: list[int], ids: list[list[int]]):
        """The log-probabilities after the context and after each candidate's tokens but its last,
        each candidate run on its own copy of the context's cache."""
        import copy

        import torch

        out = self.model(input_ids=torch.tensor([context]), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        logps = []
        for x in ids:
            if len(x) < 2:
                logps.append(first.new_zeros((0, first.shape[-1])))
                continue
            more = self.model(input_ids=torch.tensor([x[:-1]]), past_key_values=copy.deepcopy(out.past_key_values),
                              use_cache=True)
            logps.append(torch.log_softmax(more.logits[0].float(), -1))
        return first, logps

    def reply(self, c: Context) -> str:
        """The greedy continuation of the context up to the next speaker tag."""
        import torch

        from rtchat.nodes.agent import sampling

        with torch.inference_mode():
            if not self.croppable:
                context = context_ids(self.tok, c, self.max_length)
                generated = self.model.generate(torch.tensor([context]), max_new_tokens=REPLY_TOKENS, do_sample=False,
                                                eos_token_id=sorted(self.stop))
                tokens = generated[0, len(context):].tolist()
                tokens = tokens[: next((i + 1 for i, t in enumerate(tokens) if t in self.stop), len(tokens))]
            else:
                self.runner.sync(context_ids(self.tok, c, self.max_length))
                tokens = sampling.decode(self.runner, sampling.Greedy(), torch.Generator(), REPLY_TOKENS, self.stop)
        if tokens and tokens[-1] in self.stop:
            tokens = tokens[:-1]
        return self.tok.decode(tokens, skip_special_tokens=True).strip()


# -------------------------------------------------------------------- the report


def summary(per_dialogue: list[list[list[float]]], seed: int) -> dict:
    """recall_at_1_of_10 and mrr over every context, with bootstrap intervals over dialogues,
    from each dialogue's contexts' scores (the true candidate first)."""
    units = []
    for contexts_scores in per_dialogue:
        ranks = [rank(s) for s in contexts_scores]
        units.append((len(ranks), sum(r for r, _ in ranks), sum(rr for _, rr in ranks)))
    n = sum(u[0] for u in units)
    return {"recall_at_1_of_10": sum(u[1] for u in units) / n, "mrr": sum(u[2] for u in units) / n,
            "ci95": {"recall_at_1_of_10": bootstrap(units, lambda c: c[1] / c[0], seed),
                     "mrr": bootstrap(units, lambda c: c[2] / c[0], seed)}}


def gain(model: list[list[list[float]]], baseline: list[list[list[float]]], seed: int) -> dict:
    """The model's recall and MRR minus the baseline's on the same contexts, with paired bootstrap
    intervals over dialogues."""
    units = []
    for a, b in zip(model, baseline, strict=True):
        ra, rb = [rank(s) for s in a], [rank(s) for s in b]
        units.append((len(ra), sum(r for r, _ in ra), sum(rr for _, rr in ra), sum(r for r, _ in rb), sum(rr for _, rr in rb)))

    def recall(c):
        return (c[1] - c[3]) / c[0]

    def mrr(c):
        return (c[2] - c[4]) / c[0]

    total = [sum(col) for col in zip(*units, strict=True)]
    return {"recall_at_1_of_10": recall(total), "mrr": mrr(total),
            "ci95": {"recall_at_1_of_10": bootstrap(units, recall, seed), "mrr": bootstrap(units, mrr, seed)}}


def report(setting: dict, results: dict[int, list[dict]]) -> dict:
    """The report from every sampled dialogue's results (dialogue → its contexts' records)."""
    rows = [results[k] for k in sorted(results) if results[k]]
    if not rows:
        raise EvalError("no agent turn to score in the sampled dialogues (an agent turn is an S2 turn after an S1 turn "
                        f"with {MIN_WORDS}+ words, followed by another tag)")
    seed = setting["seed"]
    roles = ["model"] + (["baseline"] if setting["baseline"] else [])
    scores = {role: [[c["scores"][role] for c in row] for row in rows] for role in roles}
    out = {role: {"name": setting[role]} | summary(scores[role], seed) for role in roles}
    if setting["baseline"]:
        out["gain"] = gain(scores["model"], scores["baseline"], seed)
    contexts_all = [c for row in rows for c in row]
    out["chance"] = CHANCE
    out["ci95_method"] = {"resamples": BOOTSTRAP_RESAMPLES, "unit": "dialogue", "seed": seed}
    out["counts"] = {"dialogues": len(rows), "contexts": len(contexts_all), "candidates_per_context": DISTRACTORS + 1,
                     "widened_band": sum(c["widened"] for c in contexts_all),
                     "by_band": {f"{lo}-{hi}_words": sum(band(len(c["candidates"][0].split())) == b for c in contexts_all)
                                 for b, (lo, hi) in enumerate(BANDS)}}
    out["replies"] = [{"context_end": c["context_end"], "true": c["candidates"][0]} | c["replies"]
                      for c in contexts_all if c.get("replies")]
    out["examples"] = [{"context_end": c["context_end"], "candidates": c["candidates"], "scores": c["scores"]}
                       for c in contexts_all[:3]]
    return out


# -------------------------------------------------------------------- the run


def record(c: Context, scorers: dict, with_reply: bool) -> dict:
    """What a part file keeps of one context: where it is, its candidates, each model's scores
    (and replies)."""
    out = {"line": c.turn.line, "unit": c.turn.unit, "context_end": c.text()[-200:], "candidates": list(c.candidates),
           "widened": c.widened, "scores": {role: s.score(c) for role, s in scorers.items()}}
    if with_reply:
        out["replies"] = {role: s.reply(c) for role, s in scorers.items()}
    return out


def score_part(setting: dict, lines: list[str], shard: tuple[int, int] | None) -> dict[int, list[dict]]:
    """Dialogue (its place in the sample) → its contexts' records, for the dialogues of ``shard``
    (all without one)."""
    from tqdm.auto import tqdm

    from rtchat.evals.common import resolve_model
    from rtchat.nodes.agent.loading import LoadError

    sample = contexts(lines, setting["num_examples"], setting["per_dialogue"], setting["seed"])
    with_reply = {(k, i) for k, row in enumerate(sample) for i in range(len(row))}
    with_reply = set(sorted(with_reply)[: setting["replies"]])
    mine = [k for k in range(len(sample)) if shard is None or k % shard[1] == shard[0]]
    scorers = {}
    for role in ("model", "baseline"):
        if setting[role]:
            model, tok = resolve_model(setting[role])
            try:
                scorers[role] = Scorer(model, tok, setting["max_length"])
            except LoadError as exc:
                raise EvalError(f"{setting[role]}: {exc}") from None
    return {k: [record(c, scorers, (k, i) in with_reply) for i, c in enumerate(sample[k])]
            for k in tqdm(mine, desc="eval relevance", unit="dialogue")}


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer >= 1")
    return int(text)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=check_model,
                        help="embedded (the shipped default), embedded-v1 (the first shipped adapter), embedded-base "
                             "(no adapter), a model or adapter folder, a .gguf file or a hub id owner/name")
    parser.add_argument("--baseline", default="", type=check_model,
                        help="a second model scoring the same candidates; the JSON holds both under 'model' and "
                             "'baseline' and the paired difference under 'gain'")
    parser.add_argument("--data", required=True, type=check_data,
                        help="held-out transcript lines, a file or a folder of *.txt (data/syn/dataset_test.txt)")
    parser.add_argument("--json", required=True, help="write the report here (with --shard: this part's results)")
    parser.add_argument("--num-examples", type=_positive, default=50, help="dialogues sampled (default 50)")
    parser.add_argument("--per-dialogue", type=_positive, default=2, help="agent turns scored per dialogue (default 2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the dialogues, turns and distractors drawn, and of the bootstrap (default 0)")
    parser.add_argument("--max-length", type=_positive, default=512, help="context tokens, cut from the left (default 512)")
    parser.add_argument("--replies", type=int, default=0,
                        help="also write each model's greedy reply at the first N contexts (default 0)")
    parser.add_argument("--shard", default="",
                        help="score only part K/N of the dialogues (from 0; 'env': torchrun's RANK/WORLD_SIZE) and write "
                             "it to --json; then join the parts with --merge")
    parser.add_argument("--merge", nargs="+", metavar="PART", default=[],
                        help="write the report from the parts of a sharded run (the same options)")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic
    from rtchat.common.provenance import git_commit, machine
    from rtchat.train.data import DataError, data_files, read_lines, sha256_files

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    try:
        files = data_files(args.data)
        lines = read_lines(files)  # each checked as a transcript line
        setting = {"name": "relevance", "model": args.model, "baseline": args.baseline, "data_sha256": sha256_files(files),
                   "num_examples": args.num_examples, "per_dialogue": args.per_dialogue, "seed": args.seed,
                   "max_length": args.max_length, "replies": args.replies}
        shard = parse_shard(args.shard)
        if args.merge:
            part_setting, results = load_parts(args.merge)
            if part_setting != setting:
                raise EvalError("--merge: the parts were made with other options or data than these; give the options "
                                f"of the sharded run: {json.dumps(part_setting)}")
        else:
            results = score_part(setting, lines, shard)
        if shard is None:
            out = report(setting, results)
    except (DataError, EvalError) as exc:
        print(f"rtchat eval relevance: {exc}")
        return 1
    seconds = round(time.monotonic() - t0, 1)
    if shard is not None:
        write_atomic(Path(args.json), json.dumps({"shard": list(shard), "setting": setting, "seconds": seconds,
                                                  "results": {str(k): v for k, v in results.items()}}) + "\n")
        print(f"wrote {args.json} ({len(results)} dialogues); join the parts with --merge")
        return 0
    out |= {"seed": args.seed, "data_sha256": setting["data_sha256"], "seconds": seconds, "git_commit": git_commit(),
            "machine": machine("torch", "transformers"),
            "config": {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "evaluation")}}
    write_atomic(Path(args.json), json.dumps(out, indent=2) + "\n")
    roles = ("model", "baseline") if args.baseline else ("model",)
    print(json.dumps({role: {k: out[role][k] for k in ("name", "recall_at_1_of_10", "mrr")} for role in roles}))
    return 0
