"""``rtchat eval pred``: the reference's table 5 (reference-evals-spec.md §5–6).

**Prediction (non-verbal).** For each sampled line and word position i (words split on single
spaces not preceded by ``[%``), the context is the line up to word i and the target the next
five words. A rule-based labeller (``LABELLERS``) gives each of seven classes (trp, pause,
pause_short, pause_long, filler, backchannel, laughter) 1, 0 or −1 (unknown, excluded) for the
target, and again for the model's 20-token continuation of the context; −1 in a prediction
counts as 0. A class that has no positive in a line is −1 for the whole line (the corpus may not
annotate it). Precision, recall and F1 per class are sklearn's binary scores with
``zero_division`` = 0.

**Response (verbal).** At every speaker tag (context = the line up to and including it) the
model writes up to 60 tokens, stopping at the next " S". Scores over all responses:
pause-duration similarity (Welch's t-test between real and predicted pause durations; see
``compat`` for its direction), SimCTG diversity, and the share of non-generic replies.

``avg_non_verbal`` = mean of the 7 F1s, ``avg_verbal`` = mean of the 3 response scores,
``overall`` = their harmonic mean (0 if either is 0, NaN if either is NaN).

**Decoding** is the agent's own loop (``nodes.agent.lm.AgentLM`` + ``decoding``), one row per
method (``compat.METHODS``), the generator seeded before every generation. The contexts of one
line are generated in order of length, so each reuses the KV cache of the previous one up to
the first token that differs (``decoding.Runner.sync``), and every method runs at a context
before the next one: the line is run through the model about once, not once per position and
method. With ``batch`` (the default on a GPU) the line's contexts are instead decoded side by
side as a left-padded batch (``generate_batch``, every method; the same words).

**Sampling positions (CPU).** The reference generates at every word position (~450 per line)
and every speaker tag; ``--positions N`` / ``--responses N`` instead draw N of them per line
(uniformly, seeded by the data seed and the line's place in the sample, so the choice does not
depend on workers). 0 = all of them: the default on a GPU; on a CPU the defaults are
``CPU_POSITIONS`` / ``CPU_RESPONSES``. Labels and the per-line masking always use every
position of the line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import re

from rtchat.common.stats import welch_p
from rtchat.evals import compat

TAG_RE = re.compile(r"S\d+(?=:)")
PAUSE_RE = compat.PAUSE_ANY_RE
PRED_SPLIT_RE = re.compile(r"(?<!\[%) ")
CLASSES = ("trp", "pause", "pause_short", "pause_long", "filler", "backchannel", "laughter")
RESPONSE_METRICS = ("pause_dist_similarity", "diversity", "specific")
PRED_NEW_TOKENS = 20
RESPONSE_NEW_TOKENS = 60
NGRAM = 5
CPU_POSITIONS = 2
CPU_RESPONSES = 1
SHORT_PAUSE_S = 0.7

# -------------------------------------------------------------------- the labeller (spec §5.2)

_PUNCT = r"[.?!, ]+"
FILLER_RE = re.compile(
    r"(?:[ue]+r*[hm]+(?:[., ]+|$)|h+m+(?:[., ]+|$)|anyways?(?:,|\.{2,})|so(?:,|\.{2,})|like(?:,|\.{2,})"
    r"|(?:you|ya) know(?:,|\.{2,}))",
    re.I,
)
BACKCHANNEL_SHAPE_RE = re.compile(r"(S\d+:(?: \S+){1,3}? )(S\d+:)")
ACK_RE = re.compile(
    rf"(?: m+[hm]+{_PUNCT}| (?:u+[hm]+){{2,}}[.?!, ]| ye?[ash]h*{_PUNCT}| y[eu]p{_PUNCT}| (?:no|nope|(?:na)+){_PUNCT}"
    rf"|(?<!all) right{_PUNCT}| o+h+{_PUNCT}| ok(?:ay)?{_PUNCT}| a+h+a*{_PUNCT}| h+a+h*{_PUNCT}| eh+{_PUNCT})",
    re.I,
)
LAUGHTER_RE = re.compile(
    r"(?:(?:&=|\[%?) ?(?:laugh|giggle|cackle)|b?a*(?:h+a+h* ?){2,}|t?e*(?:h+e+h* ?){2,}|o*(?:h+o+h* ?){2,})",
    re.I,
)


def _current_speaker(ctx: str) -> str | None:
    tags = TAG_RE.findall(ctx)
    return tags[-1] if tags else None


def trp(ctx: str, s: str) -> int:
    m = TAG_RE.match(s)
    if not m:
        return 0
    return 1 if m.group() != _current_speaker(ctx) else -1


def pause(ctx: str, s: str) -> int:
    if PAUSE_RE.match(s):
        return 1
    last_word = ctx[ctx.rfind(" ") + 1 :]
    return -1 if TAG_RE.match(s) or TAG_RE.match(last_word) else 0


def _duration(s: str) -> float | None:
    m = PAUSE_RE.match(s)
    try:
        return float(m.group(1))
    except ValueError:  # "(.)": an unstandardised pause has no duration (the reference crashes, spec §10.13)
        return None


def pause_short(ctx: str, s: str) -> int:
    p = pause(ctx, s)
    if p != 1:
        return p
    d = _duration(s)
    return int(d is not None and d < SHORT_PAUSE_S)


def pause_long(ctx: str, s: str) -> int:
    p = pause(ctx, s)
    if p != 1:
        return p
    d = _duration(s)
    return int(d is not None and d >= SHORT_PAUSE_S)


def filler(ctx: str, s: str) -> int:
    return int(FILLER_RE.match(s) is not None)


def backchannel(ctx: str, s: str) -> int:
    if trp(ctx, s) != 1:
        return 0
    m = BACKCHANNEL_SHAPE_RE.match(s)
    if not m:
        return 0
    utterance, next_tag = m.group(1), m.group(2)
    if trp(ctx + " " + utterance, next_tag) != 1:
        return 0
    return int(ACK_RE.search(utterance) is not None)


def laughter(ctx: str, s: str) -> int:
    return int(LAUGHTER_RE.match(s) is not None)


LABELLERS = (trp, pause, pause_short, pause_long, filler, backchannel, laughter)


def labels(ctx: str, s: str) -> tuple[int, ...]:
    """The seven labels (in ``CLASSES`` order) of text ``s`` following ``ctx``."""
    return tuple(f(ctx, s) for f in LABELLERS)


# -------------------------------------------------------------------- examples (spec §5.1, §6.1)


@dataclasses.dataclass(frozen=True, slots=True)
class PredExample:
    line: int  # index of the line in the sample
    position: int  # words of the transcript in the context
    context: str
    target: tuple[int, ...]  # the labels of the real next words, after per-line masking


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseExample:
    line: int
    position: int
    context: str


def split_line(line: str) -> tuple[str, str]:
    """(prefix up to and including "Transcript: ", transcript)."""
    head, sep, body = line.partition("Transcript: ")
    if not sep:
        head, sep, body = line.partition("Transcript:")
        return head + "Transcript: ", body.lstrip()
    return head + sep, body


def pred_examples(line: str, index: int) -> list[PredExample]:
    """Every position's example of one line, targets masked per line (spec §5.1)."""
    prefix, body = split_line(line)
    words = PRED_SPLIT_RE.split(body)
    raw = []
    for i in range(1, len(words)):
        ctx = prefix + " ".join(words[:i])
        raw.append((i, ctx, labels(ctx, " ".join(words[i : i + NGRAM]))))
    annotated = [any(lab[c] == 1 for _, _, lab in raw) for c in range(len(CLASSES))]
    return [PredExample(index, i, ctx, tuple(v if annotated[c] else -1 for c, v in enumerate(lab))) for i, ctx, lab in raw]


def response_examples(line: str, index: int) -> list[ResponseExample]:
    prefix, body = split_line(line)
    words = body.split()
    return [ResponseExample(index, i + 1, prefix + " ".join(words[: i + 1]))
            for i, w in enumerate(words) if TAG_RE.match(w)]


def sample_positions(items: list, n: int, seed: int, index: int, kind: str) -> list:
    """n of a line's examples (all when n <= 0 or the line has no more), in their order."""
    if n <= 0 or len(items) <= n:
        return items
    rng = random.Random(f"{kind}:{seed}:{index}")
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[k] for k in keep]


# -------------------------------------------------------------------- metrics


def prf(target: list[int], predicted: list[int]) -> tuple[float, float, float]:
    """sklearn's binary precision, recall, F1 (positive label 1), zero_division = 0."""
    tp = sum(t == 1 and p == 1 for t, p in zip(target, predicted, strict=True))
    fp = sum(t != 1 and p == 1 for t, p in zip(target, predicted, strict=True))
    fn = sum(t == 1 and p != 1 for t, p in zip(target, predicted, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def pred_scores(examples: list[PredExample], predictions: list[str]) -> dict[str, float]:
    """``pred_<class>_{prec,rec,f1}`` from the examples and the model's continuations."""
    predicted = [tuple(max(0, v) for v in labels(e.context, p)) for e, p in zip(examples, predictions, strict=True)]
    out = {}
    for c, name in enumerate(CLASSES):
        keep = [k for k, e in enumerate(examples) if e.target[c] != -1]
        prec, rec, f1 = prf([examples[k].target[c] for k in keep], [predicted[k][c] for k in keep])
        out |= {f"pred_{name}_prec": prec, f"pred_{name}_rec": rec, f"pred_{name}_f1": f1}
    return out


def pause_durations(texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        for m in PAUSE_RE.finditer(text):
            try:
                out.append(float(m.group(1)))
            except ValueError:  # "(.)" has no duration
                pass
    return out


def response_scores(lines: list[str], responses: list[str], is_compat: bool) -> dict[str, float]:
    """``response_{pause_dist_similarity,diversity,specific}`` (spec §6.3)."""
    p = welch_p(pause_durations(lines), pause_durations(responses))
    texts = [" ".join(PAUSE_RE.sub("", r).split()) for r in responses]
    texts = [t for t in texts if t]
    specific = 1 - sum(compat.is_generic(t, is_compat) for t in texts) / len(texts) if texts else math.nan
    return {
        "response_pause_dist_similarity": compat.pause_similarity(p, is_compat),
        "response_diversity": compat.diversity(texts, is_compat) if texts else math.nan,
        "response_specific": specific,
    }


def hmean(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == 0 or b == 0:
        return 0.0
    return 2 * a * b / (a + b)


def _mean(values: list[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values)


def aggregate(row: dict[str, float]) -> dict[str, float]:
    """``avg_non_verbal``, ``avg_verbal`` and ``overall`` (spec §8.2) from the other columns."""
    non_verbal = _mean([row[f"pred_{c}_f1"] for c in CLASSES])
    verbal = _mean([row[f"response_{m}"] for m in RESPONSE_METRICS])
    return {"avg_non_verbal": non_verbal, "avg_verbal": verbal, "overall": hmean(non_verbal, verbal)}


COLUMNS = (
    tuple(f"pred_{c}_{m}" for c in CLASSES for m in ("prec", "rec", "f1"))
    + tuple(f"response_{m}" for m in RESPONSE_METRICS)
    + ("avg_non_verbal", "avg_verbal", "overall")
)


# -------------------------------------------------------------------- generation (in a worker)


class _RowRunner:
    """What a contrastive strategy asks of ``decoding.Runner``, for one row of a batch: the row's
    last-layer states so far (``hidden``) and its top-k candidates' states, run beforehand for
    every row at once."""

    def __init__(self, hidden):
        self.hidden = hidden
        self.states: dict[int, object] = {}

    def try_candidates(self, tokens):
        import torch

        return torch.stack([self.states[int(t)] for t in tokens])

    def keep_candidate(self, i: int) -> None:  # the chosen token is fed with the others
        pass


def _decode_rows(lm, cache, mask, positions, logits, rows, strategies, budget, eos, seed) -> list[list[int]]:
    """Decode n rows side by side from a batch cache holding their contexts (``mask``: which cache
    entries each row sees; ``logits``: (n, V) for the next token; ``rows``: their states), each
    row with its own strategy and its own generator seeded with ``seed``. Contrastive rows get
    their top-k candidates' states from one pass over every row per step (each candidate sees its
    row and itself: a 4-D mask, then cropped); the picks are then fed as one batch."""
    import torch

    from rtchat.nodes.agent import decoding, sampling

    model, device = lm.runner.model, lm.runner.device
    dtype = next(model.parameters()).dtype
    kw = {lm.runner.cache_kw: cache, "use_cache": True, "logits_to_keep": 1}
    n = len(rows)
    pad = lm.tok.pad_token_id if lm.tok.pad_token_id is not None else 0
    top_k = max((st.top_k for st in strategies if isinstance(st, sampling.Contrastive)), default=0)
    generators = [torch.Generator().manual_seed(seed) for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    alive = [True] * n
    for step in range(budget):
        if top_k:
            k = min(top_k, logits.shape[-1])
            temps = torch.tensor([getattr(st, "temperature", 1.0) for st in strategies], device=logits.device)[:, None]
            cand = torch.softmax(logits / temps, dim=-1).topk(k).indices  # as the strategies take them
            cmask = torch.cat([decoding.branch_mask((mask[b] > 0).expand(k, -1), [1] * k, dtype) for b in range(n)])
            out = model(input_ids=cand.to(device), attention_mask=cmask, position_ids=(positions[:, -1:] + 1).expand(n, k),
                        output_hidden_states=True, **kw)
            cache.crop(-k)
            states = out.hidden_states[-1].float()
            for b in range(n):
                rows[b].states = {int(t): states[b, j] for j, t in enumerate(cand[b].tolist())}
        feed = []
        for b in range(n):
            if alive[b]:
                token, _ = strategies[b].choose(rows[b], logits[b], generators[b])
                tokens[b].append(token)
                alive[b] = token not in eos
            feed.append(tokens[b][-1] if alive[b] else pad)
        if not any(alive) or step == budget - 1:
            break
        mask = torch.cat([mask, torch.tensor([[int(a)] for a in alive], device=device)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=torch.tensor([[t] for t in feed], device=device), attention_mask=mask,
                    position_ids=positions, output_hidden_states=bool(top_k), **kw)
        logits = out.logits[:, -1].float()
        if top_k:
            for b in range(n):
                if alive[b]:
                    rows[b].hidden = torch.cat([rows[b].hidden, out.hidden_states[-1][b, -1:].float()])
    return tokens


def generate_batch(lm, contexts: list[str], strategy, budget: int, eos: frozenset[int], seed: int) -> list[list[int]]:
    """The tokens ``sampling.decode`` would give for each context, decoded side by side as one
    left-padded batch (``_decode_rows``)."""
    import torch
    from transformers import DynamicCache

    from rtchat.nodes.agent import sampling

    model, device = lm.runner.model, lm.runner.device
    contrastive = isinstance(strategy, sampling.Contrastive)
    ids = [lm._prompt_ids(c, room=budget) for c in contexts]
    width = max(len(i) for i in ids)
    pad = lm.tok.pad_token_id if lm.tok.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, output_hidden_states=contrastive,
                    use_cache=True, logits_to_keep=1, **{lm.runner.cache_kw: cache})
        rows = [_RowRunner(out.hidden_states[-1][b, width - len(i) :].float() if contrastive else None)
                for b, i in enumerate(ids)]
        return _decode_rows(lm, cache, mask, positions, out.logits[:, -1].float(), rows, [strategy] * len(ids), budget,
                            eos, seed)


def _generate_chunk(lm, strategy, budget, eos, seed, contexts):
    return generate_batch(lm, contexts, strategy, budget, eos, seed)


def generate_line(lm, methods: list[str], pred_contexts: list[str], response_contexts: list[str],
                  seed: int, is_compat: bool, batch: int = 0) -> dict[str, tuple[list[str], list[str]]]:
    """method → (continuations, responses) for one line's contexts, with the agent's decoding.

    ``batch`` > 0 (the default on a GPU): the line's contexts are decoded ``batch`` at a time side
    by side (``generate_batch``; halved on out-of-memory); 0: context by context over one cache.
    (Decoding the seven methods side by side at each context instead gave the same words but
    was only ~10 % faster on one CPU thread, so it is not offered.)"""
    import torch

    from rtchat.evals.workers import halving
    from rtchat.nodes.agent import sampling

    tok = lm.tok
    eos_string = tok.eos_token or ""
    pred_eos = frozenset({tok.eos_token_id}) if tok.eos_token_id is not None else frozenset()
    kinds = ((0, pred_contexts, PRED_NEW_TOKENS, pred_eos), (1, response_contexts, RESPONSE_NEW_TOKENS, frozenset({lm.s_id})))
    strategies = {m: compat.strategy(m, is_compat) for m in methods}
    raw = {m: ([None] * len(pred_contexts), [None] * len(response_contexts)) for m in methods}
    if batch > 0:
        for m in methods:
            for kind, contexts, budget, eos in kinds:
                order = sorted(range(len(contexts)), key=lambda k: len(contexts[k]))
                run = functools.partial(_generate_chunk, lm, strategies[m], budget, eos, seed)
                got = halving(run, [contexts[k] for k in order], batch, "generations")
                for k, tokens in zip(order, got, strict=True):
                    raw[m][kind][k] = tokens
    else:
        # one pass over the line in order of length, every method at each context: the context is
        # run once (the cache keeps it; each method's tokens are cropped off by the next sync)
        jobs = sorted((len(c), kind, k, c, budget, eos) for kind, contexts, budget, eos in kinds for k, c in enumerate(contexts))
        for _, kind, k, context, budget, eos in jobs:
            ids = lm._prompt_ids(context, room=budget)
            for method in methods:
                lm.generator.manual_seed(seed)
                with torch.inference_mode():
                    lm.runner.sync(ids)
                    raw[method][kind][k] = sampling.decode(lm.runner, strategies[method], lm.generator, budget, eos)
    out = {}
    for m in methods:
        preds = [compat.clean_prediction(lm.decode_text(t), eos_string, is_compat) for t in raw[m][0]]
        responses = []
        for tokens in raw[m][1]:
            if not is_compat and tokens and tokens[-1] == lm.s_id:
                tokens = tokens[:-1]  # the next speaker's tag only ended the response
            responses.append(compat.clean_response(lm.decode_text(tokens), is_compat))
        out[m] = (preds, responses)
    return out

