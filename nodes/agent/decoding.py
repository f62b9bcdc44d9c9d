"""The agent's decoding loop: one KV cache, a token budget, and a strategy that picks each token.

Transformers ≥ 4.56 dropped contrastive search from its core, and the reference's dynamic
contrastive search patched the library's internals (spec §10.4), so decoding is ours:

- ``Runner`` holds the model and one KV cache over the tokens it has read (``ids``), with the
  last-layer hidden state of every one of them (``hidden``) and the logits for what comes next.
  ``sync(ids)`` crops the cache to the longest common prefix with a new token sequence and runs
  the model only on the rest; that is what makes a cycle cheap when the transcript only grew.
- Strategies (``Greedy``, ``Nucleus``, ``Typical``, ``Contrastive``, ``DynamicContrastive``) pick
  the next token from the logits; the contrastive ones first run the top-k candidates through
  the model in one forward pass (``Runner.try_candidates``) and keep the chosen one's cache entry.
- ``TokenBans`` masks tokens out of the logits (``prevent_special_tokens``).
- ``decode(...)`` is the loop: up to max_new_tokens, stopping at eos or when ``stop`` says so.

Candidates are run as one sequence of k tokens that share the position after the context, with
an attention mask that lets each see the cached context and itself only ("tree attention"). That
is the same computation as running k copies of the sequence with the KV cache expanded k times,
without copying the cache: for SmolLM2-135M at 800 tokens on 2 CPU cores (float32, k = 8) a
step took ~200 ms with the cache expanded, ~55 ms masked. The chosen candidate's key/value
entry is then moved into place and the other k−1 are cropped off, so the cache is exactly as if
the chosen token had been fed alone. Dynamic contrastive sampling runs only the candidates TopP
keeps (the others have weight 0), and none when one is left.

Sampling draws from a ``torch.Generator`` owned by the caller (seeded from config), never from
torch's global generator.
"""

from __future__ import annotations

import inspect
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import torch
from transformers.cache_utils import DynamicLayer

from rtchat.nodes.agent.fastpath import FastLlama


class GrowingLayer(DynamicLayer):
    """A KV cache layer whose keys and values are views into buffers with room to spare.

    transformers' DynamicLayer concatenates the whole cache with every new token (a copy of
    ~30 MB per token for SmolLM2 at 650 tokens, 15–20 % of a decoding step on 2 CPU cores);
    this one writes the new entries in place and doubles the buffers when they are full.
    Cropping only shortens the views."""

    MIN_ROOM = 256

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._keys = self._values = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self._length, self._length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            self._keys = self._grow(self._keys, key_states, end)
            self._values = self._grow(self._values, value_states, end)
        self._keys[..., start:end, :] = key_states
        self._values[..., start:end, :] = value_states
        self._set_length(end)
        return self.keys, self.values

    def _grow(self, old: torch.Tensor | None, new: torch.Tensor, needed: int) -> torch.Tensor:
        shape = (*new.shape[:-2], max(2 * needed, self.MIN_ROOM), new.shape[-1])
        buffer = torch.empty(shape, dtype=new.dtype, device=new.device)
        if old is not None:
            buffer[..., : self._length, :] = old[..., : self._length, :]
        return buffer

    def _set_length(self, n: int) -> None:
        self._length = n
        self.keys = self._keys[..., :n, :]
        self.values = self._values[..., :n, :]

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0

    def room(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The key and value buffers (…, room, head_dim) if they have room for one more entry after
        the cached ones, else None (``update`` grows them). The fast path's decoding step writes
        there and then calls ``extend(1)``."""
        if not self.is_initialized or self._keys is None or self._length >= self._keys.shape[-2]:
            return None
        return self._keys, self._values

    def extend(self, n: int) -> None:
        """Count n more entries, written into the buffers after the cached ones (``room``)."""
        self._set_length(self._length + n)

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` entries (a negative count, as DynamicLayer.crop takes)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if self.is_initialized and tokens_to_remove:
            self._set_length(max(0, self._length + tokens_to_remove))

    def reset(self) -> None:
        self.keys = self.values = self._keys = self._values = None
        self._length = 0
        self.is_initialized = False


def new_cache(config):
    """A DynamicCache for this model config whose full-attention layers grow in place."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def cache_kwarg(model: torch.nn.Module) -> str:
    """The keyword the model's forward takes its KV cache by (renamed in transformers 5)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def branch_mask(visible: torch.Tensor, lengths: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask (1, 1, k, n + k) for k new tokens run in one forward pass over
    a cache of n entries as branches that do not see each other: ``visible`` (k, n, bool) says
    which cache entries each new token sees; ``lengths`` cuts the k tokens into consecutive
    branches, each token seeing the earlier tokens of its own branch and itself. 0 where seen,
    the dtype's minimum elsewhere. (Contrastive candidates are k branches of one token; the evals
    run inserted units and continuations at many points of a line as branches.) Pass positions
    that continue each branch's context, and crop the k entries from the cache afterwards."""
    k, n = visible.shape
    mask = torch.full((1, 1, k, n + k), torch.finfo(dtype).min, dtype=dtype, device=visible.device)
    mask[0, 0, :, :n].masked_fill_(visible, 0)
    row = 0
    for m in lengths:
        own = torch.ones(m, m, dtype=torch.bool, device=visible.device).tril()
        mask[0, 0, row : row + m, n + row : n + row + m].masked_fill_(own, 0)
        row += m
    return mask


def run_branches(model, cache, cache_kw: str, points: Sequence[int], tokens: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """For each branch b — the tokens ``tokens[b]`` continuing the first ``points[b]`` entries of
    ``cache`` — the log-probabilities (len(tokens[b]), V), float32, after each of its tokens. One
    forward pass over the cache (``branch_mask``, positions continuing each branch's point); the
    cache is cropped back to what it held. (The evals score inserted units and continuations at
    many points of a line so, and candidate replies after one context.)"""
    device = next(model.parameters()).device
    n = cache.get_seq_length()
    flat = [t for ts in tokens for t in ts]
    if not flat:
        return [torch.empty(0) for _ in tokens]
    k = len(flat)
    visible = torch.zeros((k, n), dtype=torch.bool, device=device)
    positions = torch.empty((1, k), dtype=torch.long, device=device)
    row = 0
    for p, ts in zip(points, tokens, strict=True):
        m = len(ts)
        visible[row : row + m, :p] = True
        positions[0, row : row + m] = torch.arange(p, p + m, device=device)
        row += m
    mask = branch_mask(visible, [len(ts) for ts in tokens], next(model.parameters()).dtype)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([flat], device=device), attention_mask=mask, position_ids=positions,
                    use_cache=True, **{cache_kw: cache})
    cache.crop(n - cache.get_seq_length())
    logp = torch.log_softmax(out.logits[0].float(), -1)
    result, row = [], 0
    for ts in tokens:
        result.append(logp[row : row + len(ts)])
        row += len(ts)
    return result


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _prefix_tree(seqs: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    """The sequences as a prefix tree, in the order its nodes were first met: (tokens, parent of
    each node (−1: the root), the node where each sequence ends). A parent comes before its
    children, and a chain shared by every sequence comes first."""
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}
    ends = []
    for seq in seqs:
        node = -1
        for token in seq:
            key = (node, token)
            if key not in children:
                children[key] = len(tokens)
                tokens.append(token)
                parents.append(node)
            node = children[key]
        ends.append(node)
    return tokens, parents, ends


class Runner:
    """A causal LM and one KV cache over ``ids``; counts the tokens it runs and the time it takes."""

    def __init__(self, model: torch.nn.Module, fast: bool = True):
        self.model = model
        self.cache_kw = cache_kwarg(model)
        self._dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self._head = None  # the output layer once checked (see try_candidates); False: logits need more
        self.fast = FastLlama(model) if fast and FastLlama.unsupported(model) is None else None  # fastpath.py
        if self.fast is not None:
            self._head = self.fast.head
        self._no_logits = torch.empty(0, dtype=torch.long, device=self.device)  # logits_to_keep: none
        if self.device.type == "cpu":
            # Candidates run with an attention mask, and transformers then repeats the key/value
            # heads of a grouped-query model for every layer (copying the cache, ~90 MB per step for
            # SmolLM2 at 650 tokens) unless told that torch's CPU attention takes the mask with GQA.
            os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        self.tokens_run = 0  # tokens passed through the model since construction, candidates included
        self.elapsed_ns: Counter[str] = Counter()
        self.n_forwards: Counter[str] = Counter()  # forward passes by kind (a candidate batch is one)
        self.reset()

    def reset(self) -> None:
        self.cache = new_cache(self.model.config)
        self.ids: list[int] = []
        self.hidden = torch.empty(0, 0)  # (len(ids), d) last-layer states, float32, on the model's device
        self._hidden_room = self.hidden  # hidden is a view of its first rows (``_append_hidden``)
        self.logits: torch.Tensor | None = None  # (vocab,) float32: the next token after ids

    # ---------------------------------------------------------------- feeding tokens

    def sync(self, ids: Sequence[int]) -> int:
        """Make the cache hold exactly ``ids`` (and ``logits`` what follows them), re-running
        only from the first token that differs. Returns the number of tokens run."""
        if not ids:
            raise ValueError("cannot run the model on an empty token sequence")
        keep = common_prefix(self.ids, ids)
        if keep == len(ids) == len(self.ids) and self.logits is not None:
            return 0
        keep = min(keep, len(ids) - 1)  # at least one token runs, to get the logits after the last
        self.crop(keep)
        self._forward(list(ids[keep:]), "prefill")
        return len(ids) - keep

    def feed(self, token: int) -> None:
        self._forward([token], "decode")

    def peek(self, ids: Sequence[int], token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits after ``ids``, logits after ``ids`` + [token]) with one forward pass over the
        tokens not yet cached and ``token``; the cache then holds exactly ``ids`` again."""
        if not ids:
            raise ValueError("cannot run the model on an empty token sequence")
        keep = common_prefix(self.ids, ids)
        if keep == len(ids) == len(self.ids) and self.logits is not None:
            new = [token]  # the logits after ids are known: run the extra token alone
        else:
            keep = min(keep, len(ids) - 1)
            self.crop(keep)
            new = [*ids[keep:], token]
        before = self.logits
        self._forward(new, "prefill", logits_rows=2)
        after = self.logits
        self.crop(len(ids))
        self.logits = before if len(new) == 1 else self._peeked
        return self.logits, after

    def tree_logits(self, seqs: Sequence[Sequence[int]], rows: int = 2) -> list[torch.Tensor]:
        """For each token sequence, the logits (rows, vocab), float32, after each of its last
        ``rows`` tokens, from one forward pass: what the sequences share with the cache is not
        run again; the rest runs as a tree (a prefix tree of the sequences: each token sees the
        cache and its ancestors, ``tree_mask``), so a token the sequences share runs once. The
        cache then holds the cached part and the tokens every sequence shares (the trunk), as a
        ``sync`` to them would. (The agent's switch schedule: one transcript followed by pauses
        of several lengths, each then the turn-switch token.)"""
        if not seqs or any(len(seq) <= rows for seq in seqs):
            raise ValueError(f"every sequence needs more than {rows} tokens")
        common = min(len(seq) for seq in seqs) - rows  # every sequence keeps its last rows tokens in the tree
        for seq in seqs[1:]:
            common = min(common, common_prefix(seqs[0], seq))
        keep = common_prefix(self.ids, seqs[0][:common])
        self.crop(keep)
        tokens, parents, ends = _prefix_tree([seq[keep:] for seq in seqs])
        trunk = next((i for i, parent in enumerate(parents) if parent != i - 1), len(parents))
        trunk = min(trunk, common - keep)
        t0 = time.perf_counter_ns()
        k = len(tokens)
        depth = torch.empty(k, dtype=torch.long)
        seen = torch.zeros(k, keep + k, dtype=torch.bool)
        seen[:, :keep] = True
        for i, parent in enumerate(parents):
            depth[i] = 0 if parent < 0 else depth[parent] + 1
            if parent >= 0:
                seen[i] = seen[parent]
            seen[i, keep + i] = True
        mask = torch.zeros(1, 1, k, keep + k, dtype=self._dtype).masked_fill_(~seen, torch.finfo(self._dtype).min)
        positions = keep + depth
        picks = torch.tensor([end - rows + 1 + j for end in ends for j in range(rows)])
        if self.fast is not None:
            states, _ = self.fast(torch.tensor(tokens), positions, self.cache, mask.to(self.device), 0)
            logits = self.fast.logits(states[picks])
        else:
            out = self.model(
                input_ids=torch.tensor([tokens], device=self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions[None].to(self.device),
                use_cache=True,
                output_hidden_states=True,
                **{self.cache_kw: self.cache},
            )
            states, logits = out.hidden_states[-1][0], out.logits[0][picks.to(self.device)]
        self.cache.crop(keep + trunk - self.cache.get_seq_length())
        self.ids.extend(tokens[:trunk])
        self._append_hidden(states[:trunk].float())
        self.logits = None
        self.tokens_run += k
        self.n_forwards["tree"] += 1
        self.elapsed_ns["tree"] += time.perf_counter_ns() - t0
        return list(logits.float().split(rows))

    def crop(self, n: int) -> None:
        """Forget every token after the first n."""
        if n >= len(self.ids):
            return
        if n == 0:
            self.reset()
            return
        self.cache.crop(n - len(self.ids))  # a negative count removes that many from the end
        del self.ids[n:]
        self.hidden = self.hidden[:n]
        self.logits = None

    def _forward(self, tokens: list[int], kind: str, logits_rows: int = 1) -> None:
        """Run tokens after the cache; ``logits`` = what follows the last; with logits_rows 2,
        ``_peeked`` = what follows the one before it."""
        t0 = time.perf_counter_ns()
        rows = min(logits_rows, len(tokens))
        if self.fast is not None:
            n = len(self.ids)
            positions = torch.arange(n, n + len(tokens))
            hidden, logits = self.fast(torch.tensor(tokens), positions, self.cache, None, rows)
        else:
            input_ids = torch.tensor([tokens], device=self.device)
            out = self.model(
                input_ids=input_ids, use_cache=True, output_hidden_states=True, logits_to_keep=rows, **{self.cache_kw: self.cache}
            )
            hidden, logits = out.hidden_states[-1][0], out.logits[0]
        self._append_hidden(hidden.float())
        self.ids.extend(tokens)
        self.logits = logits[-1].float()
        self._peeked = logits[-2].float() if rows > 1 else None
        self.tokens_run += len(tokens)
        self.n_forwards[kind] += 1
        self.elapsed_ns[kind] += time.perf_counter_ns() - t0

    # ---------------------------------------------------------------- contrastive candidates

    def try_candidates(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run k candidate next tokens in one pass, each seeing the cached context and itself;
        returns their last-layer states (k, d), float32. The cache holds the k entries until
        ``keep_candidate`` picks one.

        Only the chosen candidate's logits are needed, so after a first call that checks that the
        model's output layer alone turns states into its logits, no logits are computed here and
        ``keep_candidate`` applies the output layer to one state (for SmolLM2 with k = 8 the
        output layer is a fifth of the weights)."""
        t0 = time.perf_counter_ns()
        n, k = len(self.ids), len(tokens)
        mask = branch_mask(torch.ones(k, n, dtype=torch.bool, device=self.device), [1] * k, self._dtype)
        if self.fast is not None:
            states, _ = self.fast(tokens.view(k), torch.full((k,), n), self.cache, mask, 0)
            self._candidates = (tokens.tolist(), states, None)
        else:
            out = self.model(
                input_ids=tokens.view(1, k).to(self.device),
                attention_mask=mask,
                position_ids=torch.full((1, k), n, device=self.device),
                use_cache=True,
                output_hidden_states=True,
                logits_to_keep=self._no_logits if self._head else 0,
                **{self.cache_kw: self.cache},
            )
            states = out.hidden_states[-1][0]
            if self._head is None:
                self._head = self._check_head(states, out.logits[0])
            self._candidates = (tokens.tolist(), states, None if self._head else out.logits[0])
        self.tokens_run += k
        self.n_forwards["decode"] += 1
        self.elapsed_ns["decode"] += time.perf_counter_ns() - t0
        return states.float()

    def _check_head(self, states: torch.Tensor, logits: torch.Tensor):
        """The output layer, if applying it alone to last-layer states gives the model's logits
        (no soft-capping or scaling after it); else False: candidates then get full logits."""
        head = self.model.get_output_embeddings()
        ok = head is not None and torch.allclose(head(states).float(), logits.float(), rtol=1e-4, atol=1e-4)
        return head if ok else False

    def keep_candidate(self, i: int) -> None:
        """Keep candidate i (of the last ``try_candidates``) as the next token; drop the others."""
        tokens, states, logits = self._candidates
        k = len(tokens)
        if i:
            for layer in self.cache.layers:  # the k new entries are the last k of every layer
                layer.keys[..., -k, :] = layer.keys[..., -k + i, :]
                layer.values[..., -k, :] = layer.values[..., -k + i, :]
        if k > 1:
            self.cache.crop(-(k - 1))
        self.ids.append(tokens[i])
        self._append_hidden(states[i : i + 1].float())
        self.logits = (self._head(states[i]) if logits is None else logits[i]).float()
        del self._candidates

    def _append_hidden(self, rows: torch.Tensor) -> None:
        """hidden += rows, written into room kept after it (doubling when full): a decoding step
        copied the whole (n, d) matrix with torch.cat, 1.6 MB at 700 tokens for SmolLM2."""
        n, end = len(self.hidden), len(self.hidden) + len(rows)
        room = self._hidden_room
        if room.dim() != 2 or end > room.shape[0] or room.shape[1] != rows.shape[1]:
            room = torch.empty(max(2 * end, 256), rows.shape[1], dtype=rows.dtype, device=rows.device)
            if n:
                room[:n] = self.hidden
            self._hidden_room = room
        room[n:end] = rows
        self.hidden = room[:end]

    def take_elapsed_ns(self) -> dict[str, int]:
        out = dict(self.elapsed_ns)
        self.elapsed_ns.clear()
        return out

    def take_forwards(self) -> dict[str, int]:
        out = dict(self.n_forwards)
        self.n_forwards.clear()
        return out


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
