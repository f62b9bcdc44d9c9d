"""The FastSpeech2 engine (reference-io-spec §3.7) through transformers: ESPnet's FastSpeech2
Conformer with its HiFi-GAN vocoder (``FastSpeech2ConformerWithHifiGan``), 22,050 Hz, fp32.

``tts.model``: a hub id or a folder; empty = ``espnet/fastspeech2_conformer_with_hifigan`` (its
tokenizer files are in the same repository). That checkpoint is single-speaker (LJSpeech), unlike
the reference's 200-speaker fairseq model, so the reference's ``Voice 16`` does not exist there:
a single-speaker model offers the one voice ``default``; a model whose config has several speakers
offers ``Voice 1`` … ``Voice N``, speaker id N − 1 as in the reference.

The tokenizer turns text into ARPAbet phonemes with ``g2p_en``, which needs NLTK data
(``averaged_perceptron_tagger_eng``, ``cmudict``) that it downloads on first use; offline, fetch it
beforehand (``python -m nltk.downloader averaged_perceptron_tagger_eng cmudict``). Loading runs one
short sentence, so missing data fails at start rather than on the first reply.

Pauses are the core's job (``handles_pauses``): this engine never sees a pause token. Text is
rendered one sentence at a time; a sentence without a letter or digit has no phonemes and yields
nothing, as in the reference.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterator

import numpy as np

from rtchat.configs.devices import resolve_device
from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.backend import TtsLoadError
from rtchat.nodes.tts.hf import load_failed, model_source, place, sentences, to_int16, with_voice

log = logging.getLogger(__name__)

DEFAULT_MODEL = "espnet/fastspeech2_conformer_with_hifigan"
SAMPLE_RATE_HZ = 22050  # the checkpoint's vocoder rate, used when its config does not say
SINGLE_VOICE = "default"
NLTK_HINT = ("g2p_en needs NLTK's averaged_perceptron_tagger_eng and cmudict: "
             "python -m nltk.downloader averaged_perceptron_tagger_eng cmudict (needs a network once)")
_SPEAKABLE = re.compile(r"[^\W_]")


class FastSpeech2Engine:
    """A loaded FastSpeech2 + HiFi-GAN checkpoint as a ``TtsBackend``."""

    name = "fastspeech2"
    text_style = "plain"
    handles_pauses = True

    def __init__(self, model, tokenizer, device: str):
        self.model = model  # FastSpeech2ConformerWithHifiGan, eval, on device
        self.tokenizer = tokenizer  # FastSpeech2ConformerTokenizer
        self.device = device
        self.sample_rate = int(getattr(model.config.vocoder_config, "sampling_rate", None) or SAMPLE_RATE_HZ)
        self.n_speakers = model.config.model_config.num_speakers or 1
        self.speaker_id: int | None = 0 if self.n_speakers > 1 else None

    def voices(self) -> list[str]:
        if self.n_speakers > 1:
            return [f"Voice {i}" for i in range(1, self.n_speakers + 1)]
        return [SINGLE_VOICE]

    def set_voice(self, voice: str) -> None:
        if self.n_speakers == 1:
            if voice not in ("", SINGLE_VOICE):
                raise ValueError(f"tts.voice: this FastSpeech2 model has one speaker, no voice {voice!r}; "
                                 f"allowed: {SINGLE_VOICE!r} or empty")
            return
        allowed = self.voices()
        if voice and voice not in allowed:
            raise ValueError(f"tts.voice: this FastSpeech2 model has no voice {voice!r}; "
                             f"allowed: Voice 1 … Voice {self.n_speakers}, or empty for Voice 1")
        self.speaker_id = allowed.index(voice) if voice else 0

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for sentence in sentences(text):
            if _SPEAKABLE.search(sentence):
                yield self._render(sentence)

    def _render(self, text: str) -> np.ndarray:
        import torch

        ids = self.tokenizer(text, return_tensors="pt")["input_ids"].to(self.device)
        speaker = None if self.speaker_id is None else torch.tensor([[self.speaker_id]], device=self.device)
        with torch.inference_mode():
            out = self.model(ids, speaker_ids=speaker, return_dict=True)
        return to_int16(out.waveform[0].float().cpu().numpy())


def load(cfg: TtsConfig) -> FastSpeech2Engine:
    """The FastSpeech2 checkpoint ``cfg.model`` names on ``cfg.device``, fp32, with ``cfg.voice``;
    TtsLoadError saying what failed and what to do."""
    source = model_source(cfg.model, DEFAULT_MODEL, "FastSpeech2")
    if importlib.util.find_spec("g2p_en") is None:
        raise TtsLoadError(f"the FastSpeech2 tokenizer needs the g2p_en package: pip install g2p_en; then {NLTK_HINT}; "
                           "or use tts.backend=piper")
    device = resolve_device(cfg.device, "tts")
    try:
        from transformers import FastSpeech2ConformerTokenizer, FastSpeech2ConformerWithHifiGan

        tokenizer = FastSpeech2ConformerTokenizer.from_pretrained(source)
        model = FastSpeech2ConformerWithHifiGan.from_pretrained(source)  # fp32: the reference turned fp16 off
    except LookupError as exc:  # NLTK data missing
        raise TtsLoadError(f"the FastSpeech2 tokenizer cannot phonemise: {exc}; {NLTK_HINT}") from exc
    except Exception as exc:  # transformers/huggingface_hub raise many kinds; all mean "cannot load"
        raise load_failed("FastSpeech2", source, DEFAULT_MODEL, exc) from exc
    engine = with_voice(FastSpeech2Engine(place(model, device, "FastSpeech2"), tokenizer, device), cfg.voice)
    try:
        next(engine.synthesize("Hello."))  # phonemiser and model work now, not on the first reply
    except LookupError as exc:
        raise TtsLoadError(f"the FastSpeech2 tokenizer cannot phonemise: {exc}; {NLTK_HINT}") from exc
    log.info("fastspeech2 %s on %s, %d Hz, voices: %s", source, device, engine.sample_rate, ", ".join(engine.voices()[:3]))
    return engine
