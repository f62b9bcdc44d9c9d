"""The Bark engine (reference-io-spec §3.8) through transformers (``BarkModel`` + ``BarkProcessor``):
text → semantic tokens → coarse and fine EnCodec codes → 24 kHz audio. Slow (seconds per
sentence even on a GPU) but expressive: it reads ``...`` as hesitation and ``[laughs]``-style cues,
so the core gives it ``bark``-style text with pauses already turned into ``...`` (``handles_pauses``
is false).

``tts.model``: a hub id or a folder; empty = ``suno/bark-small``. fp16 on a GPU, fp32 on the CPU.

Voices are Bark's speaker prompts: ``v2/en_speaker_0`` … ``9``, ``en_speaker_0`` … ``9`` (Bark's
first prompts), ``announcer``, and ``unconditional`` (no prompt: a random voice each sentence; the
reference crashed on it). Empty = ``v2/en_speaker_8``, the current version of the reference's
default ``en_speaker_8``. The prompts are files the processor lists in the model's
``speaker_embeddings_path.json`` and fetches from the hub; a prompt that cannot be loaded (offline,
not in the folder) is logged and the engine speaks without one rather than failing.

Generation follows the reference: semantic and coarse temperature 0.7, fine 0.5, early stop once
P(EOS) ≥ 0.05, top-p 0.95 only for a cough or throat-clearing cue, and at most
max(1 s, 1.6 s × words) of audio per sentence (2 s × words when singing, ♪), 768 semantic steps at
most. Output is scaled from [-1, 1] to int16 (the reference kept ×32767 floats). One array per
sentence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import numpy as np

from rtchat.configs.devices import resolve_device
from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.backend import TtsLoadError
from rtchat.nodes.tts.hf import load_failed, model_source, place, sentences, to_int16, with_voice

log = logging.getLogger(__name__)

DEFAULT_MODEL = "suno/bark-small"
DEFAULT_VOICE = "v2/en_speaker_8"
NO_PROMPT = "unconditional"
VOICES = tuple(
    [f"v2/en_speaker_{n}" for n in range(10)] + [f"en_speaker_{n}" for n in range(10)] + ["announcer", NO_PROMPT]
)
SEMANTIC_RATE_HZ = 49.9  # semantic tokens per second of audio
MAX_SEMANTIC_TOKENS = 768  # Bark's hard cap, about 15.4 s
SECONDS_PER_WORD = 1.6  # longest audio per word of text (the reference's rule against rambling)
SECONDS_PER_SUNG_WORD = 2.0
MIN_SECONDS = 1.0
SEMANTIC_TEMPERATURE = 0.7
COARSE_TEMPERATURE = 0.7
FINE_TEMPERATURE = 0.5
MIN_EOS_P = 0.05  # stop once EOS is this likely (Bark's own default is 0.2)
TOP_P_FOR_COUGH = 0.95
_COUGH = re.compile(r"\[[^\]]*(?:cough|throat)[^\]]*\]", re.IGNORECASE)
_ONLY_DOTS = re.compile(r"^[.\s]*$")


def max_semantic_tokens(text: str) -> int:
    """The semantic steps ``text`` may take: max(1 s, 1.6 s per word), 2 s per word when sung."""
    per_word = SECONDS_PER_SUNG_WORD if "♪" in text else SECONDS_PER_WORD
    seconds = max(MIN_SECONDS, per_word * len(text.split()))
    return min(MAX_SEMANTIC_TOKENS, round(seconds * SEMANTIC_RATE_HZ))


class BarkEngine:
    """A loaded Bark checkpoint as a ``TtsBackend``."""

    name = "bark"
    text_style = "bark"
    handles_pauses = False

    def __init__(self, model, processor, device: str):
        self.model = model  # BarkModel, eval, on device
        self.processor = processor  # BarkProcessor: tokenizer + speaker prompt files
        self.device = device
        self.sample_rate = int(model.config.codec_config.sampling_rate)
        self.voice = ""  # the current preset; set by set_voice
        self.prompt: dict | None = None  # its tensors on device; None = no prompt

    def voices(self) -> list[str]:
        return list(VOICES)

    def set_voice(self, voice: str) -> None:
        name = voice or DEFAULT_VOICE
        if name not in VOICES:
            raise ValueError(f"tts.voice: Bark has no voice {voice!r}; allowed: {', '.join(VOICES)}, "
                             f"or empty for {DEFAULT_VOICE}")
        if name != self.voice:
            self.prompt = self._load_prompt(name)
            self.voice = name

    def _load_prompt(self, name: str) -> dict | None:
        if name == NO_PROMPT:
            return None
        if name not in self.processor.available_voice_presets:
            log.warning("bark: the model's processor offers no voice preset %r; speaking without a voice prompt", name)
            return None
        try:
            prompt = self.processor(text="", voice_preset=name)["history_prompt"]
        except (OSError, ValueError, TypeError) as exc:  # not downloaded and no network, or a broken file
            reason = " ".join(str(exc).split())  # transformers' message spans several indented lines
            log.warning("bark: voice preset %r cannot be loaded (%s); speaking without a voice prompt", name, reason)
            return None
        return {key: value.to(self.device) for key, value in prompt.items()}

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for sentence in sentences(text):
            if not _ONLY_DOTS.match(sentence):
                yield self._render(sentence)

    def _render(self, text: str) -> np.ndarray:
        inputs = self.processor(text=text).to(self.device)
        top_p = {"semantic_top_p": TOP_P_FOR_COUGH, "coarse_top_p": TOP_P_FOR_COUGH} if _COUGH.search(text) else {}
        audio = self.model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            history_prompt=self.prompt,
            semantic_max_new_tokens=max_semantic_tokens(text),
            semantic_do_sample=True,
            semantic_temperature=SEMANTIC_TEMPERATURE,
            coarse_do_sample=True,
            coarse_temperature=COARSE_TEMPERATURE,
            fine_temperature=FINE_TEMPERATURE,
            min_eos_p=MIN_EOS_P,
            **top_p,
        )
        return to_int16(audio[0].float().cpu().numpy())


def load(cfg: TtsConfig) -> BarkEngine:
    """The Bark checkpoint ``cfg.model`` names on ``cfg.device`` (fp16 on a GPU) with ``cfg.voice``;
    TtsLoadError saying what failed and what to do."""
    source = model_source(cfg.model, DEFAULT_MODEL, "Bark")
    device = resolve_device(cfg.device, "tts")
    try:
        import torch
        from transformers import BarkModel, BarkProcessor

        processor = BarkProcessor.from_pretrained(source)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = BarkModel.from_pretrained(source, dtype=dtype)
    except Exception as exc:  # transformers/huggingface_hub raise many kinds; all mean "cannot load"
        raise load_failed("Bark", source, DEFAULT_MODEL, exc) from exc
    if not hasattr(model.generation_config, "semantic_config"):
        raise TtsLoadError(f"tts.model: {source} has no Bark generation_config.json (semantic, coarse and fine "
                           f"settings); use a complete Bark checkpoint such as {DEFAULT_MODEL}")
    engine = with_voice(BarkEngine(place(model, device, "Bark"), processor, device), cfg.voice)
    log.info("bark %s on %s (%s), voice %s%s", source, device, dtype, engine.voice,
             "" if engine.prompt is not None or engine.voice == NO_PROMPT else " (no prompt)")
    return engine
