"""The agent's model runner: one KV cache over the tokens read, and the forward passes decoding needs.

Transformers ≥ 4.56 dropped contrastive search from its core, and the reference's dynamic
contrastive search patched the library's internals (spec §10.4), so decoding is ours:

- ``Runner`` holds the model and one KV cache over the tokens it has read (``ids``), with the
  last-layer hidden state of every one of them (``hidden``) and the logits for what comes next.
  ``sync(ids)`` crops the cache to the longest common prefix with a new token sequence and runs
  the model only on the rest; that is what makes a cycle cheap when the transcript only grew.
- ``Runner.tree_logits`` runs several continuations of the cached tokens side by side as a
  prefix tree (the switch schedule's pauses), ``Runner.peek`` one continuation and one token.
- The strategies that pick each token, the token bans and the ``decode`` loop are in
  ``sampling.py``; the contrastive strategies run their top-k candidates through the model in
  one forward pass (``Runner.try_candidates``) and keep the chosen one's cache entry.

Candidates are run as one sequence of k tokens that share the position after the context, with
an attention mask that lets each see the cached context and itself only ("tree attention"). That
is the same computation as running k copies of the sequence with the KV cache expanded k times,
without copying the cache: for SmolLM2-135M at 800 tokens on 2 CPU cores (float32, k = 8) a
step took ~200 ms with the cache expanded, ~55 ms masked. The chosen candidate's key/value
entry is then moved into place and the other k−1 are cropped off, so the cache is exactly as if
the chosen token had been fed alone. Dynamic contrastive sampling runs only the candidates TopP
keeps (the others have weight 0), and none when one is left.

"""

from __future__ import annotations

import inspect
import os
import time
from collections import Counter
from collections.abc import Sequence

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
        cache and its ancestors), so a token the sequences share runs once. The
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
