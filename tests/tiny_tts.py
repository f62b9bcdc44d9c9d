"""Tiny randomly initialised Bark and FastSpeech2 checkpoints, saved as model folders that the
engines load by path as a user's downloaded model would (the hub is unreachable in tests). Import
as ``from tiny_tts import …``.

FastSpeech2's tokenizer phonemises with ``g2p_en``, which downloads NLTK data on first use; tests
put ``fake_g2p`` in its place (one "phoneme" per character), never the real package.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

FS2_FRAMES_PER_PHONEME = 3  # the tiny duration predictor's constant output
FS2_HOP = 256  # samples per frame: the vocoder's upsample rates 8 × 8 × 2 × 2
FS2_SYMBOLS = ["<blank>", "<unk>"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ',.?!") + ["<sos/eos>"]


class _CharG2p:
    """g2p_en.G2p's interface: text → phoneme list; here one symbol per character."""

    def __call__(self, text: str) -> list[str]:
        return list(text)


@contextlib.contextmanager
def fake_g2p():
    """A stand-in ``g2p_en`` module for as long as the context lasts (transformers' cached
    availability check is cleared on the way in and out)."""
    from transformers.utils import import_utils

    module = types.ModuleType("g2p_en")
    module.__spec__ = importlib.machinery.ModuleSpec("g2p_en", None)
    module.G2p = _CharG2p
    saved = sys.modules.get("g2p_en")
    sys.modules["g2p_en"] = module
    import_utils.is_g2p_en_available.cache_clear()
    try:
        yield module
    finally:
        if saved is None:
            sys.modules.pop("g2p_en", None)
        else:
            sys.modules["g2p_en"] = saved
        import_utils.is_g2p_en_available.cache_clear()


def fastspeech2_dir(path: Path, num_speakers: int | None = None, seed: int = 0) -> Path:
    """A FastSpeech2ConformerWithHifiGan folder (model + tokenizer; call inside ``fake_g2p``) whose
    every phoneme lasts ``FS2_FRAMES_PER_PHONEME`` frames, so audio length = phonemes × 3 × 256."""
    from transformers import (
        FastSpeech2ConformerConfig,
        FastSpeech2ConformerHifiGanConfig,
        FastSpeech2ConformerTokenizer,
        FastSpeech2ConformerWithHifiGan,
        FastSpeech2ConformerWithHifiGanConfig,
    )

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(FS2_SYMBOLS)}))
    FastSpeech2ConformerTokenizer(str(path / "vocab.json")).save_pretrained(path)
    small = dict(duration_predictor_channels=8, energy_predictor_channels=8, pitch_predictor_channels=8,
                 duration_predictor_layers=1, energy_predictor_layers=1, pitch_predictor_layers=1)
    model_cfg = FastSpeech2ConformerConfig(
        vocab_size=len(FS2_SYMBOLS), hidden_size=16, num_mel_bins=8, encoder_layers=1, decoder_layers=1,
        encoder_linear_units=16, decoder_linear_units=16, encoder_kernel_size=3, decoder_kernel_size=3,
        speech_decoder_postnet_layers=1, speech_decoder_postnet_units=8, num_speakers=num_speakers, **small,
    )
    vocoder_cfg = FastSpeech2ConformerHifiGanConfig(
        model_in_dim=8, upsample_initial_channel=16, upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]], initializer_range=0.1,  # audible, not silent
    )
    torch.manual_seed(seed)
    model = FastSpeech2ConformerWithHifiGan(
        FastSpeech2ConformerWithHifiGanConfig(model_config=model_cfg.to_dict(), vocoder_config=vocoder_cfg.to_dict())
    ).eval()
    with torch.no_grad():  # log-duration constant: exp(x) - 1 = 3 frames for every phoneme
        model.model.duration_predictor.linear.weight.zero_()
        model.model.duration_predictor.linear.bias.fill_(math.log(FS2_FRAMES_PER_PHONEME + 1))
    model.save_pretrained(path)
    return path


BARK_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", "[", "]", "♪"]
BARK_WORDS += list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


def bark_dir(path: Path, presets: dict[str, bool], seed: int = 0) -> Path:
    """A BarkModel + BarkProcessor folder. ``presets``: voice preset name → whether its prompt files
    exist (False: listed in speaker_embeddings_path.json but missing, as on an offline machine)."""
    from transformers import BarkConfig, BarkModel, BarkProcessor, BertTokenizer, EncodecConfig
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    torch.manual_seed(seed)
    sub = dict(hidden_size=16, num_layers=1, num_heads=2, block_size=1024)
    codec = EncodecConfig(
        hidden_size=8, num_filters=2, codebook_size=1024, codebook_dim=8, num_residual_layers=1, num_lstm_layers=1,
        upsampling_ratios=[8, 5, 4, 2], target_bandwidths=[6.0], sampling_rate=24000,  # 320 samples per code, 8 codebooks
    )
    config = BarkConfig(  # Bark's token layout needs its real vocabulary sizes; everything else is tiny
        semantic_config=dict(sub, input_vocab_size=129_600, output_vocab_size=10_048),
        coarse_acoustics_config=dict(sub, input_vocab_size=12_096, output_vocab_size=12_096),
        fine_acoustics_config=dict(sub, input_vocab_size=1056, output_vocab_size=1056),
        codec_config=codec.to_dict(),
    )
    BarkModel(config).eval().save_pretrained(path)
    # BarkGenerationConfig cannot save itself through save_pretrained; the hub's file is this dict
    (path / "generation_config.json").write_text(json.dumps(BarkGenerationConfig().to_dict()))
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(BARK_WORDS)})
    BarkProcessor(tokenizer=tokenizer).save_pretrained(path)
    embeddings: dict = {"repo_or_path": str(path)}
    rng = np.random.default_rng(seed)
    for name, present in presets.items():
        files = {}
        for key, shape, high in (("semantic_prompt", (60,), 10_000), ("coarse_prompt", (2, 90), 1024),
                                 ("fine_prompt", (8, 90), 1024)):
            rel = f"speaker_embeddings/{name}_{key}.npy"
            files[key] = rel
            if present:
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                np.save(path / rel, rng.integers(0, high, size=shape))
        embeddings[name] = files
    (path / "speaker_embeddings_path.json").write_text(json.dumps(embeddings))
    return path
