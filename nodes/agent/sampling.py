"""How the agent picks each token: the decoding strategies, the token bans and the loop.

Transformers ≥ 4.56 dropped contrastive search from its core, and the reference's dynamic
contrastive search patched the library's internals (spec §10.4), so decoding is ours, on the
``decoding.Runner``'s cache:

- Strategies (``Greedy``, ``Nucleus``, ``Typical``, ``Contrastive``, ``DynamicContrastive``) pick
  the next token from the logits; the contrastive ones first run the top-k candidates through
  the model in one forward pass (``Runner.try_candidates``) and keep the chosen one's cache entry.
- ``TokenBans`` masks tokens out of the logits (``prevent_special_tokens``).
- ``decode(...)`` is the loop: up to max_new_tokens, stopping at eos or when ``stop`` says so.

Sampling draws from a ``torch.Generator`` owned by the caller (seeded from config), never from
torch's global generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import torch

from rtchat.nodes.agent.decoding import Runner

# -------------------------------------------------------------------- bans


class TokenBans:
    """A logits mask: tokens never allowed, and tokens not allowed right after a given prefix.

    A banned sequence (a, b, c) bans c whenever the context ends with (a, b), as HF's
    ``bad_words_ids`` does; a one-token sequence is banned everywhere."""

    def __init__(self, always: Iterable[int] = (), sequences: Iterable[Sequence[int]] = ()):
        self.always = sorted(set(always))
        self.sequences = [tuple(s) for s in sequences if len(s) > 1]
        self.always += sorted({s[0] for s in sequences if len(s) == 1} - set(self.always))
        self._always_t: torch.Tensor | None = None

    def __bool__(self) -> bool:
        return bool(self.always or self.sequences)

    def apply(self, logits: torch.Tensor, context: Sequence[int]) -> torch.Tensor:
        if not self:
            return logits
        logits = logits.clone()
        if self.always:
            if self._always_t is None or self._always_t.device != logits.device:
                self._always_t = torch.tensor(self.always, device=logits.device)
            logits[self._always_t] = float("-inf")
        for seq in self.sequences:
            head = seq[:-1]
            if len(context) >= len(head) and tuple(context[len(context) - len(head) :]) == head:
                logits[seq[-1]] = float("-inf")
        return logits


# -------------------------------------------------------------------- strategies


class Strategy(Protocol):
    def choose(self, runner: Runner, logits: torch.Tensor, generator: torch.Generator) -> tuple[int, bool]:
        """Pick the next token from the (masked) logits; return (token, whether the runner already fed it)."""


class Greedy:
    def choose(self, runner, logits, generator):
        return int(logits.argmax()), False


def _sample(logits: torch.Tensor, generator: torch.Generator) -> int:
    probs = torch.softmax(logits.float().cpu(), dim=-1)  # on the CPU, where the generator lives
    return int(torch.multinomial(probs, 1, generator=generator))


class Nucleus:
    """Sampling from the smallest set of tokens whose probability reaches top_p (HF's TopP rule)."""

    def __init__(self, top_p: float, temperature: float = 1.0):
        self.top_p, self.temperature = top_p, temperature

    def choose(self, runner, logits, generator):
        scores = logits / self.temperature
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)
        remove[-1] = False  # the most likely token always stays
        scores = scores.masked_fill(remove.scatter(0, order, remove), float("-inf"))
        return _sample(scores, generator), False


class Typical:
    """Locally typical sampling: tokens whose surprisal is closest to the entropy, up to typical_p mass."""

    def __init__(self, typical_p: float, temperature: float = 1.0):
        self.typical_p, self.temperature = typical_p, temperature

    def choose(self, runner, logits, generator):
        scores = logits / self.temperature
        logp = torch.log_softmax(scores, dim=-1)
        entropy = -(logp * logp.exp()).nansum()
        shifted, order = torch.sort((-logp - entropy).abs(), descending=False)
        cumulative = scores[order].softmax(dim=-1).cumsum(dim=-1)
        last = min(int((cumulative < self.typical_p).sum()), len(shifted) - 1)
        remove = shifted > shifted[last]
        remove[0] = False
        scores = scores.masked_fill(remove.scatter(0, order, remove), float("-inf"))
        return _sample(scores, generator), False


def degeneration_penalty(candidates: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """max_j cos(h_c, H_j) for each candidate state h_c (k, d) against the context states H (n, d)."""
    cand = candidates / candidates.norm(dim=-1, keepdim=True)
    ctx = context / context.norm(dim=-1, keepdim=True)
    return (cand @ ctx.T).max(dim=-1).values


def top_p_on_candidates(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which of k candidate probabilities survive the reference's TopPProbsWarper (spec §10.2):
    ascending cumulative sum, plus the mass outside the candidates, must exceed 1 − top_p; the
    strongest always survives."""
    sorted_probs, order = torch.sort(probs, descending=False)
    cumulative = sorted_probs.cumsum(dim=-1) + (1 - probs.sum())
    remove = cumulative <= (1 - top_p)
    remove[-1] = False
    return ~remove.scatter(0, order, remove)


class Contrastive:
    """Contrastive search: among the top_k tokens, the best (1−α)·p − α·degeneration penalty."""

    def __init__(self, top_k: int, alpha: float, temperature: float = 1.0):
        self.top_k, self.alpha_min, self.temperature = top_k, alpha, temperature

    def alpha(self, probs: torch.Tensor) -> float:
        return self.alpha_min

    def live(self, cand_probs: torch.Tensor) -> torch.Tensor:
        """Which candidates can be chosen at all (all of them, unless sampling filters some)."""
        return torch.ones_like(cand_probs, dtype=torch.bool)

    def select(self, scores: torch.Tensor, generator: torch.Generator) -> int:
        return int(scores.argmax())

    def choose(self, runner, logits, generator):
        probs = torch.softmax(logits / self.temperature, dim=-1)
        cand_probs, cand_ids = probs.topk(min(self.top_k, probs.numel()))
        alpha, live = self.alpha(probs), self.live(cand_probs)
        idx = live.nonzero().flatten()
        scores = torch.full_like(cand_probs, -1.0)  # a score of −1 gives a sampling weight of 0
        if alpha == 0 or len(idx) == 1:
            # No penalty to weigh, or one candidate left: the choice needs no candidate states, and
            # the chosen token is fed like a greedy one (the draw below still consumes the generator
            # as the full computation does, so the same seed gives the same words).
            scores[idx] = cand_probs[idx]
            i = self.select(scores, generator)
            return int(cand_ids[i]), False
        hidden = runner.try_candidates(cand_ids[idx])
        scores[idx] = (1 - alpha) * cand_probs[idx] - alpha * degeneration_penalty(hidden, runner.hidden)
        i = self.select(scores, generator)
        runner.keep_candidate(int((idx == i).nonzero()))
        return int(cand_ids[i]), True


class DynamicContrastive(Contrastive):
    """The reference's dynamic contrastive search (spec §10.2): α = α_min + (α_max − α_min)(1 − Σp²),
    and with top_p > 0 a draw among the candidates that survive TopP, weighted by 1 + score.

    Candidates TopP removes have weight 0, so only the survivors are run through the model."""

    def __init__(self, top_k: int, alpha_min: float, alpha_max: float, top_p: float, temperature: float = 1.0):
        super().__init__(top_k, alpha_min, temperature)
        self.alpha_max, self.top_p = alpha_max, top_p

    def alpha(self, probs):
        return self.alpha_min + (self.alpha_max - self.alpha_min) * (1 - float((probs * probs).sum()))

    def live(self, cand_probs):
        if self.top_p <= 0:
            return super().live(cand_probs)
        return top_p_on_candidates(cand_probs, self.top_p)

    def select(self, scores, generator):
        if self.top_p <= 0:
            return int(scores.argmax())
        weights = (1 + scores).clamp(min=0).cpu()
        if float(weights.sum()) <= 0:  # α = 1 with every survivor fully degenerate
            return int(scores.argmax())
        return int(torch.multinomial(weights / weights.sum(), 1, generator=generator))


def make_strategy(cfg) -> Strategy:
    """The strategy an ``AgentConfig`` names (``decoding``, with its top_k/top_p/typical_p/α/temperature)."""
    if cfg.decoding == "greedy":
        return Greedy()
    if cfg.decoding == "nucleus":
        return Nucleus(cfg.top_p, cfg.temperature)
    if cfg.decoding == "typical":
        return Typical(cfg.typical_p, cfg.temperature)
    if cfg.decoding == "contrastive":
        return Contrastive(cfg.top_k, cfg.min_penalty_alpha, cfg.temperature)
    if cfg.decoding == "dynamic_contrastive":
        return DynamicContrastive(cfg.top_k, cfg.min_penalty_alpha, cfg.max_penalty_alpha, cfg.top_p, cfg.temperature)
    raise ValueError(f"agent.decoding: got {cfg.decoding!r}; allowed: greedy, nucleus, typical, contrastive, dynamic_contrastive")


# -------------------------------------------------------------------- the loop


def decode(
    runner: Runner,
    strategy: Strategy,
    generator: torch.Generator,
    max_new_tokens: int,
    eos_ids: frozenset[int] = frozenset(),
    bans: TokenBans | None = None,
    stop: Callable[[int], bool] | None = None,
) -> list[int]:
    """Continue ``runner.ids`` by up to max_new_tokens; the eos or the token ``stop`` accepts ends it
    (and is returned). A token is fed to the model only when another one is wanted after it."""
    tokens: list[int] = []
    pending = None
    for _ in range(max_new_tokens):
        if pending is not None:
            runner.feed(pending)
        logits = bans.apply(runner.logits, runner.ids) if bans else runner.logits
        token, fed = strategy.choose(runner, logits, generator)
        tokens.append(token)
        pending = None if fed else token
        if token in eos_ids or (stop is not None and stop(token)):
            break
    return tokens
