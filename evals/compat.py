"""The reference's evaluation quirks (reference-evals-spec.md §10), fixed by default and
reproduced with ``--reference-compat`` so numbers can be compared with the reference's CSVs.

Each pure function here takes ``compat`` and documents both behaviours:

==============================  =====================================  ====================================
quirk (spec)                    --reference-compat                     default (fixed)
==============================  =====================================  ====================================
pause similarity (§6.3, #1)     1 − Welch p-value (rises with           the Welch p-value itself: 1 when the
                                *dis*-similarity)                      predicted and real pause durations
                                                                       cannot be told apart, → 0 when they
                                                                       differ
``rstrip`` (§5.3/§6.2, #4)      ``pred.rstrip(eos_string)`` and         eos and the closing " S" are dropped
                                ``rstrip(" S")`` strip character sets   as tokens; only whitespace is
                                ("things" → "thing" with "</s>")        stripped
generic replies (§6.3, #2)      "really", "very", "so" deleted as       deleted as whole words, and "so" only
                                substrings first ("also" → "al", so     before another word ("i'm so sorry"
                                "i'm sorry"/"i don't think so" never    → "i'm sorry"; "i don't think so"
                                match)                                  stays and matches)
diversity (§6.3, #3)            each text's last n-gram is not          every n-gram counts; rep_n not
                                counted; rep_n rounded to 2 decimals    rounded
top-k (§2.3, #6)                nucleus and typical also keep only      nucleus and typical as named, no
                                the top 50 tokens (HF's implicit        top-k
                                top_k)
==============================  =====================================  ====================================

Not reproduced in either mode: ``--prevent-special-token-generation`` being dropped (#5; the evals
never ban tokens), the transformers 4.34 pin (#7; decoding is the agent's own loop), and the
seed reset per *batch* (#11): here the generator is seeded before every generation, so a
prediction never depends on its batch or on the number of workers.
"""

from __future__ import annotations

import math
import re

PAUSE_ANY_RE = re.compile(r"(?:<p> )?\((\d*?\.\d*?)\)")
GENERIC_PHRASES = ("i don't know", "i don't think so", "i don't remember", "i can't remember", "i'm not sure", "i'm sorry")
IMPLICIT_TOP_K = 50

# the decoding methods of the reference's tables, in its order (spec §2.3)
METHODS = (
    "greedy", "nucleus", "typical", "contrastive", "dynamic_contrastive",
    "contrastive_sampling", "dynamic_contrastive_sampling",
)


# -------------------------------------------------------------------- decoding


class TopK:
    """Keep only the top k logits, then let ``inner`` choose (HF applies top-k before top-p/typical)."""

    def __init__(self, k: int, inner):
        self.k, self.inner = k, inner

    def choose(self, runner, logits, generator):
        import torch

        if self.k < logits.numel():
            kth = torch.topk(logits, self.k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return self.inner.choose(runner, logits, generator)


def strategy(method: str, compat: bool):
    """The agent's decoding strategy for one of the reference's methods (spec §2.3)."""
    from rtchat.nodes.agent import sampling

    if method == "greedy":
        return sampling.Greedy()
    if method in ("nucleus", "typical"):
        inner = sampling.Nucleus(0.9) if method == "nucleus" else sampling.Typical(0.9)
        return TopK(IMPLICIT_TOP_K, inner) if compat else inner
    if method == "contrastive":
        return sampling.Contrastive(top_k=8, alpha=0.6)
    if method == "dynamic_contrastive":
        return sampling.DynamicContrastive(top_k=8, alpha_min=0.0, alpha_max=0.6, top_p=0.0)
    if method == "contrastive_sampling":
        return sampling.DynamicContrastive(top_k=8, alpha_min=0.6, alpha_max=0.6, top_p=0.8)
    if method == "dynamic_contrastive_sampling":
        return sampling.DynamicContrastive(top_k=8, alpha_min=0.0, alpha_max=0.6, top_p=0.8)
    raise ValueError(f"decoding method {method!r}; allowed: {', '.join(METHODS)}")


# -------------------------------------------------------------------- post-processing


def clean_prediction(text: str, eos_string: str, compat: bool) -> str:
    """A pred continuation (eos and pad already removed as tokens) → the text that is labelled."""
    if compat and eos_string:
        text = text.rstrip(eos_string)
    return text.strip()


def clean_response(text: str, compat: bool) -> str:
    """A response decoded *with* its closing " S" token (compat) or without it (fixed)."""
    return text.rstrip(" S") if compat else text.strip()


# -------------------------------------------------------------------- response metrics


def pause_similarity(p_value: float, compat: bool) -> float:
    return 1.0 - p_value if compat else p_value


def _ngram_counts(tokens: list[str], n: int, compat: bool) -> tuple[int, int]:
    stop = len(tokens) - n if compat else len(tokens) - n + 1
    grams = [tuple(tokens[i : i + n]) for i in range(max(0, stop))]
    return len(set(grams)), len(grams)


def diversity(texts: list[str], compat: bool) -> float:
    """SimCTG diversity: Π_{n=2..4} (1 − rep_n/100), rep_n = 100·(1 − Σ distinct n-grams / Σ n-grams)
    over all texts; NaN when some n has no n-gram at all."""
    product = 1.0
    for n in (2, 3, 4):
        unique = total = 0
        for text in texts:
            u, t = _ngram_counts(text.strip().split(), n, compat)
            unique, total = unique + u, total + t
        if total == 0:
            return math.nan
        rep = 100 * (1 - unique / total)
        if compat:
            rep = round(rep, 2)
        product *= 1 - rep / 100
    return product


def normalise_generic(text: str, compat: bool) -> str:
    text = text.lower()
    if compat:
        for word in ("really", "very", "so"):
            text = text.replace(word, "")
    else:
        text = " ".join(re.sub(r"\b(?:really|very)\b|\bso\b(?=\s+\w)", "", text).split())
    for old, new in (("do not", "don't"), ("cannot", "can't"), ("can not", "can't"), ("i am", "i'm")):
        text = text.replace(old, new)
    return " ".join(text.split())


def is_generic(text: str, compat: bool) -> bool:
    norm = normalise_generic(text, compat)
    return any(phrase in norm for phrase in GENERIC_PHRASES)
