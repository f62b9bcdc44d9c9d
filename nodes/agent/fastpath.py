"""The agent's forward pass on the CPU: a Llama decoder run directly on its weights (issue 19).

transformers' ``LlamaForCausalLM.forward`` is general — masks built per call, outputs recorded by
hooks, every projection its own module call — and for a 135M model decoding one token on 2 CPU
cores that generality costs more than the matmuls: ~13 of ~29 ms per token (torch profiler,
int8). ``FastLlama`` computes the same thing with the same operations in the same order on the
same modules' weights, with two changes that leave each output unchanged: q, k and v run as one
projection, gate and up as another (``quant.fuse``: every output row keeps its weights), and
logits are computed only for the rows the caller asks for.

What it takes: token ids, their positions, the ``Runner``'s KV cache (the same layers the plain
path writes, so both paths can take turns on one cache), and an additive attention mask or None
(None: each new token sees the cache and the new tokens before it). What it returns: the
last-layer states after the final norm (the plain path's ``hidden_states[-1]``) and the logits
of the last ``logits_rows`` tokens.

With int8 projections (``quant.Int8Linear``) and the agent's C++ kernels built, a step of one
token after the cache with no mask — every greedy decoding step — runs as one call
(``kernels.decoder``): the ~25 torch ops per layer cost more in dispatch than their arithmetic
at this size (~6 of ~23 ms per token for SmolLM2-135M on 2 cores). It computes what the layers
here compute, with the same int8 products, and norms, rotary embedding, attention and SiLU of
its own in float32 (the same to ~1e-6). It writes the token's key and value into the cache's
buffers in place when they have room (``GrowingLayer.room``); when they do not, the step runs
here op by op, which grows them. SmolLM2-135M int8 at ~725 tokens on the 2-core Xeon: 23 → 11 ms
a step with 2 threads, 42 → 20 ms with 1 (torch's int8 kernel op by op → this; the weights and
the float32 cache, ~170 MB a step, at ~10 GB/s a core).

``FastLlama.unsupported(model)`` says why a model cannot take this path (another architecture,
rope scaling, biases, an output layer that is not a plain projection, not on the CPU); the
``Runner`` then uses the model's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rtchat.nodes.agent import kernels
from rtchat.nodes.agent.quant import Int8Linear, QuantLinear, fuse


class FastLlama:
    def __init__(self, model):
        reason = self.unsupported(model)
        if reason:
            raise ValueError(f"FastLlama: {reason}")
        cfg = model.config
        inner = model.model
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.head = model.get_output_embeddings()
        self._head = _projection(self.head)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scaling = self.head_dim**-0.5
        rotary = inner.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scaling = rotary.attention_scaling
        self.layers = [_Layer(layer, self.n_heads * self.head_dim, self.n_kv * self.head_dim) for layer in inner.layers]
        self.dtype = self.embed.weight.dtype
        self.decoder = self._decoder()

    def _decoder(self):
        """The one-call decoding step (module doc), or None where it does not apply."""
        per_layer = [layer.projections for layer in self.layers]  # (qkv, o, gate_up, down)
        if any(type(p) is not Int8Linear or p.bias is not None for p in [*sum(per_layer, ()), self.head]):
            return None
        if self.dtype != torch.float32 or not kernels.available():
            return None
        by_kind = list(zip(*per_layer, strict=True))  # every layer's qkv, every layer's o, …
        return kernels.decoder(
            [layer.ln1.weight for layer in self.layers], [layer.ln2.weight for layer in self.layers],
            *[[getattr(p, name) for p in kind] for kind in by_kind for name in ("qweight", "scale")],
            self.embed.weight, self.norm.weight, self.head.qweight, self.head.scale, self.inv_freq,
            self.n_heads, self.n_kv, self.head_dim, self.norm.variance_epsilon, self.rope_scaling, self.scaling,
        )

    @staticmethod
    def unsupported(model) -> str | None:
        cfg = getattr(model, "config", None)
        if getattr(cfg, "model_type", None) != "llama":
            return f"model type {getattr(cfg, 'model_type', None)!r}, not llama"
        if next(model.parameters()).device.type != "cpu":
            return "not on the CPU"
        rope = getattr(cfg, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            return f"rope type {rope.get('rope_type')!r}"
        if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
            return "projections with biases"
        if getattr(cfg, "hidden_act", "silu") != "silu":
            return f"activation {cfg.hidden_act!r}"
        if getattr(cfg, "pretraining_tp", 1) != 1:
            return "pretraining_tp > 1"
        if getattr(cfg, "final_logit_softcapping", None):
            return "soft-capped logits"
        return None

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) as transformers' rotary embedding makes them, sin's first half negated (``_rotate``)."""
        freqs = positions[:, None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = (emb.cos() * self.rope_scaling).to(self.dtype), (emb.sin() * self.rope_scaling).to(self.dtype)
        half = sin.shape[-1] // 2
        return cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

    def __call__(
        self, ids: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor | None, logits_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (m,), positions (m,), mask (1, 1, m, n + m) additive or None → (states (m, d), logits (rows, vocab) or None)."""
        m = ids.shape[0]
        past = cache.layers[0].get_seq_length() if cache.layers[0].is_initialized else 0
        if m == 1 and mask is None and self.decoder is not None:
            out = self._one_call(int(ids[0]), int(positions[0]), cache, past, logits_rows)
            if out is not None:
                return out
        cos, sin = self._rotary(positions)
        causal = False
        if mask is None and m > 1:
            if past:
                mask = torch.ones(m, past + m, dtype=torch.bool).tril(diagonal=past)[None, None]
            else:
                causal = True
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.layers[i], mask, causal, self)
        x = _rms(x, self.norm)
        logits = self.logits(x[m - logits_rows :]) if logits_rows else None
        return x, logits

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """The output layer on last-layer states (rows, d) → (rows, vocab)."""
        return self._head(states)

    def _one_call(self, token: int, position: int, cache, past: int, logits_rows: int):
        """The one-call step (module doc), or None when a cache layer has no room for the token."""
        rooms = [layer.room() if hasattr(layer, "room") else None for layer in cache.layers]
        if any(room is None for room in rooms):
            return None
        keys, values = zip(*rooms, strict=True)
        x, logits = self.decoder.step(token, position, past, keys, values, logits_rows > 0)
        for layer in cache.layers:
            layer.extend(1)
        return x, logits if logits_rows else None


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    """LlamaRMSNorm's forward as one fused op (float32 inside, as LlamaRMSNorm computes it)."""
    if x.dtype != torch.float32:
        return norm(x)
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (heads, m, head_dim), as transformers' apply_rotary_pos_emb:
    x·cos + rotate_half(x)·sin, where rotate_half(x)·sin = (−x₂·s, x₁·s) = roll(x)·(−s, s)
    exactly (a sign moves between factors without rounding)."""
    return (x * cos) + (x.roll(x.shape[-1] // 2, dims=-1) * signed_sin)


def _projection(layer):
    """``layer``'s forward, calling a quantised layer's kernel directly for a few rows (the layer's
    own forward does the same with more steps: bias, reshapes)."""
    if not isinstance(layer, QuantLinear) or layer.bias is not None:
        return layer

    def project(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > layer.SMALL:
            return layer(x)
        return layer._small(x).to(x.dtype)

    return project


class _Layer:
    """One decoder layer's weights: fused q/k/v and gate/up where ``quant.fuse`` can join them."""

    def __init__(self, layer, q_size: int, kv_size: int):
        attn, mlp = layer.self_attn, layer.mlp
        self.ln1, self.ln2 = layer.input_layernorm, layer.post_attention_layernorm
        qkv = fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        self.qkv = _projection(qkv) if qkv is not None else None
        self.parts = tuple(_projection(p) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        self.o = _projection(attn.o_proj)
        gate_up = fuse([mlp.gate_proj, mlp.up_proj])
        self.gate_up = _projection(gate_up) if gate_up is not None else None
        self.projections = (qkv, attn.o_proj, gate_up, mlp.down_proj)  # what the one-call step reads (None: not fused)
        self.gate, self.up, self.down = (_projection(p) for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
        self.q_size, self.kv_size = q_size, kv_size

    def __call__(self, x, cos, sin, cache_layer, mask, causal, model: FastLlama):
        m = x.shape[0]
        h = _rms(x, self.ln1)
        qkv = self.qkv(h) if self.qkv is not None else torch.cat([proj(h) for proj in self.parts], dim=-1)
        heads = model.n_heads + model.n_kv  # q and k rotate together: one rotary op per layer
        qk = _rotate(qkv[:, : self.q_size + self.kv_size].view(m, heads, model.head_dim).transpose(0, 1), cos, sin)
        q, k = qk[: model.n_heads], qk[model.n_heads :]
        v = qkv[:, self.q_size + self.kv_size :].view(m, model.n_kv, model.head_dim).transpose(0, 1)
        keys, values = cache_layer.update(k[None], v[None])
        if m == 1 and mask is None:
            # one query: its heads grouped under their key/value head, as queries of that head
            # (transformers' pack_gqa), so each key/value head is read once; two matmuls and a
            # softmax, which on the CPU take about half the time of the fused attention kernel
            q = q.reshape(model.n_kv, model.n_heads // model.n_kv, model.head_dim)
            scores = torch.matmul(q, keys[0].transpose(1, 2)).mul_(model.scaling)
            out = torch.matmul(torch.softmax(scores, dim=-1), values[0]).reshape(1, self.q_size)
        else:
            grouped = model.n_kv != model.n_heads
            out = F.scaled_dot_product_attention(
                q[None], keys, values, attn_mask=mask, is_causal=causal, scale=model.scaling, enable_gqa=grouped
            )
            out = out[0].transpose(0, 1).reshape(m, self.q_size)
        x = x + self.o(out)
        h = _rms(x, self.ln2)
        if self.gate_up is not None:
            gate, up = self.gate_up(h).chunk(2, dim=-1)
        else:
            gate, up = self.gate(h), self.up(h)
        return x + self.down(F.silu(gate) * up)
