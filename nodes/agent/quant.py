"""Weight-only quantised linear layers for decoding on the CPU, and fused projections.

Decoding reads every weight once per token, so on a CPU it is bound by how fast the weights come
in: fewer bytes per weight make it faster. Two layers replace ``nn.Linear`` (``quantize_linears``):

- ``Int8Linear`` (dtype ``int8``): int8 weights, one bf16 scale per output row, the agent's
  int8 × float32 kernel (``kernels.int8_mm``: C++, AVX-512, built on first use), or torch's
  int8 × bf16 kernel (``_weight_int8pack_mm``) where that cannot be built. Ours streams the
  weights 1.5–2× faster (SmolLM2-135M's shapes, one row, 1 or 2 threads; ~2× for 8 or 16 rows)
  and keeps the activations in float32.
- ``Int4Linear`` (dtype ``int4``): 4-bit weights in groups of 32 along the input, a bf16 scale and
  zero per group, torch's int4 × bf16 kernel (``_weight_int4pack_mm_for_cpu``). Groups of 32 with a
  scale and a minimum are GGUF's Q4_1 blocks, the format the embedded model ships in. On the
  2-core Xeon that built this, the kernel reads the 135M model's 30 layers and output layer in
  ~5 ms per token against ~13 ms for torch's int8 kernel (issue 19's measurements in the README).

Up to SMALL rows (decoding, candidates, a few new words) use the quantised kernel; longer inputs
(a prefill) dequantise to bf16 and use the bf16 matmul, which is much faster there. The bf16
matmul runs on row counts from a fixed set only: CHUNK rows at a time, the rest padded with zero
rows to a multiple of ROWS. oneDNN compiles and caches kernels for every (rows, weight) shape it
meets, and prefills of every length made the agent's memory grow without end in long sessions
(memray: 169 MB of JIT kernels in 150 s, soaks +12 % in 10 min). With the fixed set there are
CHUNK / ROWS row counts, compiled once. A row's result does not depend on the rows beside it, so
padding changes nothing but the work (< ROWS rows). Activations go in and out in the model's dtype
(the kernels take them in bf16, ``kernels.int8_mm`` in float32).

``fuse(layers)`` joins projections that read the same input (q, k, v; gate, up) into one layer
whose output is theirs side by side: one kernel call instead of three. Every output row keeps its
own weights, scales and zeros, so each output is computed as the separate layer computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rtchat.nodes.agent import kernels

GROUP = 32  # Int4Linear's group size along the input: GGUF's Q4_1 block


class QuantLinear(torch.nn.Module):
    """What the weight-only layers share: the small/dense split and the fixed-shape bf16 matmul."""

    PREFILL_ONLY: tuple[str, ...] = ()  # buffers a decoding step does not read (benchmarks' weight bytes)

    SMALL = 16
    ROWS = 32
    CHUNK = 128

    in_features: int
    out_features: int
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = self._small(flat) if flat.shape[0] <= self.SMALL else self._dense(flat.to(torch.bfloat16))
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def _small(self, flat: torch.Tensor) -> torch.Tensor:
        """The product for up to SMALL rows (any float dtype in; float32 or bf16 out)."""
        raise NotImplementedError

    def dequantized(self) -> torch.Tensor:
        """The weight (out, in) in bf16, as the quantised kernel sees it."""
        raise NotImplementedError

    splits: tuple[int, ...] = ()  # a fused layer's parts (output sizes); () = one part

    def _dense(self, flat: torch.Tensor) -> torch.Tensor:
        """bf16 matmul over row counts from the fixed set (module doc); a fused layer's parts one
        by one, so that each output is the separate layer's to the bit (the bf16 matmul's
        blocking depends on the weight's shape)."""
        weight = self.dequantized()
        weights = weight.split(list(self.splits)) if self.splits else (weight,)
        parts = []
        for start in range(0, flat.shape[0], self.CHUNK):
            part = flat[start : start + self.CHUNK]
            rows = part.shape[0]
            pad = -rows % self.ROWS
            if pad:
                part = F.pad(part, (0, 0, 0, pad))
            out = [F.linear(part, w) for w in weights]
            parts.append((out[0] if len(out) == 1 else torch.cat(out, dim=-1))[:rows])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _join(self, layers) -> None:
        """What every joined layer sets: sizes, parts and bias."""
        self.in_features = layers[0].in_features
        self.out_features = sum(layer.out_features for layer in layers)
        self.splits = tuple(layer.out_features for layer in layers)
        self.bias = joined_bias(layers)


def joined_bias(layers) -> torch.Tensor | None:
    """The biases of layers side by side (zeros for a layer without one); None if none has one."""
    if all(layer.bias is None for layer in layers):
        return None
    return torch.cat([layer.bias if layer.bias is not None else torch.zeros(layer.out_features) for layer in layers])


class Int8Linear(QuantLinear):
    """A linear layer with int8 weights and one bf16 scale per output row (module doc). The
    weight dequantised to bf16 is kept for prefills (``dense``), as ``Int4Linear`` keeps it:
    dequantising it at every prefill cost more than the matmul (2.9 ms against 0.36 ms for the
    576 → 3072 projection at 16 rows, one thread), and every prefill of more than SMALL tokens —
    the switch schedule's branches, a trim's re-encoding — paid it in every layer."""

    PREFILL_ONLY = ("dense",)

    def __init__(self, linear: torch.nn.Linear | None = None):
        super().__init__()
        if linear is None:  # fuse() fills it
            return
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("dense", self.qweight.to(torch.bfloat16) * self.scale[:, None])
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def _small(self, flat):
        if kernels.available():
            return kernels.int8_mm(flat, self.qweight, self.scale)
        return torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16), self.qweight, self.scale)

    def dequantized(self):
        return self.dense

    @classmethod
    def joined(cls, layers: list[Int8Linear]) -> Int8Linear:
        out = cls()
        out.register_buffer("qweight", torch.cat([layer.qweight for layer in layers]))
        out.register_buffer("scale", torch.cat([layer.scale for layer in layers]))
        out.register_buffer("dense", torch.cat([layer.dense for layer in layers]))
        out._join(layers)
        return out


class Int4Linear(QuantLinear):
    """A linear layer with 4-bit weights, a bf16 scale and zero per GROUP inputs (module doc):
    weight = (code − 8) · scale + zero, code in 0…15 (torch's int4 kernel's convention). The
    weight dequantised to bf16 is kept for prefills (``dense``): 2 bytes a weight in memory that
    decoding never reads."""

    PREFILL_ONLY = ("dense",)

    def __init__(self, linear: torch.nn.Linear | None = None):
        super().__init__()
        if linear is None:  # fuse() fills it
            return
        weight = linear.weight.detach().float()
        n, k = weight.shape
        groups = weight.reshape(n, k // GROUP, GROUP)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-12)
        codes = torch.round((groups - low) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = low + 8 * scale
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        # (k / GROUP, n, 2): scale and zero per group and output, as the kernel takes them
        self.register_buffer("scale_zero", torch.stack([scale[..., 0].t(), zero[..., 0].t()], -1).contiguous().to(torch.bfloat16))
        self.bias = linear.bias
        self.in_features, self.out_features = k, n
        self.register_buffer("dense", self._dequantize(codes, self.scale_zero))

    @staticmethod
    def fits(linear: torch.nn.Linear) -> bool:
        return linear.in_features % GROUP == 0 and linear.out_features % 16 == 0  # the kernel packs 16 outputs at a time

    def _small(self, flat):
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), self.packed, GROUP, self.scale_zero)

    @staticmethod
    def _dequantize(codes: torch.Tensor, scale_zero: torch.Tensor) -> torch.Tensor:
        """The weight the codes stand for, in bf16 (kept: dequantising at every prefill took longer than the matmuls)."""
        sz = scale_zero.float()  # (k / GROUP, n, 2)
        n, k = codes.shape
        groups = codes.reshape(n, k // GROUP, GROUP).float() - 8
        return (groups * sz[..., 0].t()[..., None] + sz[..., 1].t()[..., None]).reshape(n, k).to(torch.bfloat16)

    def dequantized(self):
        return self.dense

    def _codes(self) -> torch.Tensor:
        """The 4-bit codes (int32, 0…15) of the dense weight."""
        sz = self.scale_zero.float()
        n, k = self.dense.shape
        groups = self.dense.float().reshape(n, k // GROUP, GROUP) - sz[..., 1].t()[..., None]
        return (torch.round(groups / sz[..., 0].t()[..., None]) + 8).clamp(0, 15).to(torch.int32).reshape(n, k)

    @classmethod
    def joined(cls, layers: list[Int4Linear]) -> Int4Linear:
        out = cls()
        out.register_buffer("dense", torch.cat([layer.dense for layer in layers]))
        out.register_buffer("scale_zero", torch.cat([layer.scale_zero for layer in layers], dim=1))
        # the kernel's layout is blocked across outputs: pack the codes anew (recovered exactly from the dense weight)
        out.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(out._codes(), 1))
        out._join(layers)
        return out


QUANTISED = {"int8": Int8Linear, "int4": Int4Linear}


def quantize_linears(model: torch.nn.Module, dtype: str = "int8") -> None:
    """Replace every nn.Linear by the dtype's layer (``int8`` or ``int4``), in place (CPU). With
    int4, a layer the int4 kernel cannot take (inputs not groups of GROUP, outputs not a multiple of 16) gets int8."""
    if dtype not in QUANTISED:
        raise ValueError(f"quantize_linears: dtype {dtype!r}; allowed: {', '.join(QUANTISED)}")
    kernels.available()  # built now (once) rather than in the first decoding step
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                layer = Int4Linear if dtype == "int4" and Int4Linear.fits(child) else Int8Linear
                setattr(module, name, layer(child))


def fuse(layers: list[torch.nn.Module]) -> torch.nn.Module | None:
    """One layer computing ``layers`` side by side (module doc), or None when they differ in
    kind or input size (the caller then runs them one by one)."""
    kind = type(layers[0])
    if any(type(layer) is not kind for layer in layers) or len({layer.in_features for layer in layers}) != 1:
        return None
    if kind in (Int8Linear, Int4Linear):
        return kind.joined(layers)
    if kind is torch.nn.Linear:
        with torch.no_grad():
            weight, bias = torch.cat([layer.weight for layer in layers]), joined_bias(layers)
            out = torch.nn.Linear(*weight.shape[::-1], bias=bias is not None, dtype=weight.dtype, device=weight.device)
            out.weight.copy_(weight)
            if bias is not None:
                out.bias.copy_(bias)
        return out
    return None
