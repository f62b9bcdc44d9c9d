"""Score many points of one transcript line in a few forward passes (the evals' engine).

The quick evals ask, at many points of a line, what the model says next, or how likely an
inserted unit is. Each point's prompt is the line up to that point, so instead of one forward
pass per point (hundreds of ~500-token passes per line), ``LineScorer``:

1. builds the line's tokens unit by unit (the header, then `` <unit>`` for each whitespace unit
   of the transcript), so every point is a token boundary and the tokens of a prompt are exactly
   those of ``tok(prefix)`` followed by the unit's own tokens;
2. runs the line once with a KV cache: the logits at every position give every point's next-token
   distribution, and the log-probability of every real unit;
3. runs *branches* — a few tokens continuing the line at a point (an inserted tag or pause, the
   greedy continuation so far) — all in one pass over the cache, with a 4-D attention mask that
   lets each branch see the line up to its point and itself only, and positions that continue
   from its point (``decoding.branch_mask``, which the agent's contrastive candidates use too).
   The cache is cropped back to the line afterwards.

A line longer than ``max_length`` tokens loses its beginning (as in training); points that fall
in the lost part are not scored (``point_token`` returns None).
"""

from __future__ import annotations

import os

import torch

from rtchat.nodes.agent import decoding


class LineScorer:
    """One line's tokens and the model's logits after each of them."""

    def __init__(self, model, tok, line: str, max_length: int):
        head, _, body = line.partition("Transcript:")
        ids = list(tok(head + "Transcript:")["input_ids"])
        self.unit_start: list[int] = []  # token index where unit i starts (before the cut)
        for unit in body.split():
            self.unit_start.append(len(ids))
            ids += tok(" " + unit, add_special_tokens=False)["input_ids"]
        self.cut = max(0, len(ids) - max_length)
        self.ids = ids[self.cut :]
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        if self.device.type == "cpu":
            os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")  # see decoding.Runner
        from transformers import DynamicCache

        self.cache_kw = decoding.cache_kwarg(model)
        self.cache = DynamicCache(config=model.config)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([self.ids], device=self.device), use_cache=True,
                        **{self.cache_kw: self.cache})
        self.logp = torch.log_softmax(out.logits[0].float(), -1)  # (n, V): row j predicts token j+1

    def point_token(self, unit_index: int) -> int | None:
        """Index in ``self.ids`` of the first token of unit ``unit_index`` (the point before it),
        or None when the point has no token before it in the kept part of the line."""
        j = self.unit_start[unit_index] - self.cut
        return j if j >= 1 else None

    def next_logp(self, j: int) -> torch.Tensor:
        """Log-probabilities (V,) of the token at index j given the line before it."""
        return self.logp[j - 1]

    def unit_nll(self, unit_index: int) -> tuple[float, int] | None:
        """Summed NLL and token count of the real unit ``unit_index`` given the line before it."""
        j = self.point_token(unit_index)
        if j is None:
            return None
        end = self.unit_start[unit_index + 1] - self.cut if unit_index + 1 < len(self.unit_start) else len(self.ids)
        target = torch.tensor(self.ids[j:end], device=self.logp.device)
        return -float(self.logp[j - 1 : end - 1].gather(-1, target[:, None]).sum()), end - j

    def branches(self, points: list[int], tokens: list[list[int]]) -> list[torch.Tensor]:
        """For each branch b (the tokens ``tokens[b]`` placed at token index ``points[b]``, i.e.
        continuing ``ids[:points[b]]``), the log-probabilities (len(tokens[b]), V) after each of
        its tokens. One forward pass over the cached line; the cache is left holding the line."""
        return decoding.run_branches(self.model, self.cache, self.cache_kw, points, tokens)
