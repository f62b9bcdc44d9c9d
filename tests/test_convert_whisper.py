"""``rtchat models convert-whisper``: CTranslate2 Whisper model.bin → openai-whisper checkpoint.

Two levels. A tiny random HF Whisper, converted to model.bin by ctranslate2's own converter and
writer, checks the reader and the mapping exactly (logits equal the HF model's). The embedded
tiny.en checks the real thing: the converted checkpoint, in the openai-whisper backend, hears
espeak speech as the faster-whisper backend does with the embedded model."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rtchat.cli import main as cli
from rtchat.configs.schema import AsrConfig
from rtchat.evals.bench_asr import wer
from rtchat.nodes.asr.backends import FasterWhisper, OpenAIWhisper, embedded_dir
from rtchat.nodes.asr.convert import ConvertError, convert, load_converted, read_model_bin
from rtchat.nodes.asr.frames import SR_HZ, resample
from rtchat.nodes.tts.espeak import synthesize as espeak

pytestmark = pytest.mark.model

CPU = dataclasses.replace(AsrConfig(), device="cpu", threads=2)
TEXTS = (
    "The quick brown fox jumps over the lazy dog. Yesterday I went to the market to buy some apples and oranges for my family.",
    "Please remind me to call my sister tomorrow morning. The weather should be nice, so we might go for a walk in the park.",
)
MAX_WER_GAP = 0.02  # the bound: |WER(openai-whisper) - WER(faster-whisper)| <= 2 points


def hf_whisper_ct2(root: Path, quantization: str | None = None):
    """A tiny random HF Whisper (2 audio heads, 4 text heads, unequal depths: shapes alone cannot
    give the dims) and its model.bin from ctranslate2's TransformersConverter."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ctranslate2
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=3,
        encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=50, max_target_positions=16,
    )  # fmt: skip
    hf = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in hf.parameters():  # non-zero biases and layer norms, so a mix-up shows
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(root / "hf")
    WhisperTokenizerFast(tokenizer_file=str(Path(embedded_dir("tiny.en")) / "tokenizer.json")).save_pretrained(root / "hf")
    out = root / ("ct2-" + (quantization or "float"))
    ctranslate2.converters.TransformersConverter(str(root / "hf")).convert(str(out), quantization=quantization, force=True)
    return hf, out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return hf_whisper_ct2(tmp_path_factory.mktemp("tiny"))


def test_the_reader_reads_what_ctranslate2_writes(tiny):
    hf, ct2 = tiny
    model = read_model_bin(ct2 / "model.bin")
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert int(model.get("encoder/num_heads")) == 2 and int(model.get("decoder/num_heads")) == 4
    conv1 = model.get("encoder/conv1/weight")
    assert conv1.shape == (16, 80, 3) and conv1.dtype == np.float32
    np.testing.assert_array_equal(conv1, hf.model.encoder.conv1.weight.detach().numpy())
    np.testing.assert_array_equal(model.get("decoder/projection/weight"), hf.proj_out.weight.detach().numpy())


def test_the_converted_tiny_model_computes_what_the_hf_model_computes(tiny, tmp_path):
    hf, ct2 = tiny
    dims = convert(ct2, tmp_path / "tiny.pt")
    assert dims == {
        "n_mels": 80, "n_audio_ctx": 50, "n_audio_state": 16, "n_audio_head": 2, "n_audio_layer": 2,
        "n_vocab": 51864, "n_text_ctx": 16, "n_text_state": 16, "n_text_head": 4, "n_text_layer": 3,
    }  # fmt: skip
    ow = load_converted(tmp_path / "tiny.pt")
    # the converter's default for a model without known heads: the upper half of the decoder
    assert ow.alignment_heads.to_dense().nonzero().tolist() == [[1, h] for h in range(4)] + [[2, h] for h in range(4)]
    mel = torch.randn(1, 80, 100)
    tokens = torch.tensor([[50257, 50362, 400, 500, 600]])
    with torch.no_grad():
        torch.testing.assert_close(ow.encoder(mel), hf.model.encoder(mel).last_hidden_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ow(mel, tokens), hf(input_features=mel, decoder_input_ids=tokens).logits, atol=1e-5, rtol=1e-5)


def test_a_quantized_model_bin_is_refused_naming_it(tmp_path):
    _, ct2 = hf_whisper_ct2(tmp_path, quantization="int8")
    with pytest.raises(ConvertError, match=r"model\.bin.*quantized"):
        convert(ct2, tmp_path / "q.pt")
    assert not (tmp_path / "q.pt").exists()


def test_a_corrupt_model_bin_is_refused_naming_it(tiny, tmp_path):
    _, ct2 = tiny
    (tmp_path / "model.bin").write_bytes((ct2 / "model.bin").read_bytes()[:5000])
    with pytest.raises(ConvertError, match=rf"{tmp_path / 'model.bin'}.*truncated"):
        convert(tmp_path, tmp_path / "x.pt")
    (tmp_path / "model.bin").write_bytes(b"\x07\x00\x00\x00rest")
    with pytest.raises(ConvertError, match="binary version 7"):
        read_model_bin(tmp_path / "model.bin")
    assert not (tmp_path / "x.pt").exists()


def test_the_cli_refuses_a_missing_src_naming_the_file(tmp_path, capsys):
    assert cli(["models", "convert-whisper", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt")]) == 1
    assert f"{tmp_path / 'nowhere' / 'model.bin'}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.fixture(scope="module")
def tiny_en_pt(tmp_path_factory) -> Path:
    """The embedded tiny.en converted by the CLI with its defaults, under RTCHAT_CACHE."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTCHAT_CACHE", str(cache))
        assert cli(["models", "convert-whisper"]) == 0
    path = cache / "models" / "whisper-tiny.en.pt"
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    return path


@pytest.mark.slow
def test_the_converted_tiny_en_loads_with_openai_whispers_own_tiny_en_alignment_heads(tiny_en_pt):
    import whisper

    checkpoint = torch.load(tiny_en_pt, weights_only=True)
    assert len(checkpoint["model_state_dict"]) == 167  # 148 CT2 variables, q/k/v split, key biases dropped
    model = load_converted(tiny_en_pt)
    reference = whisper.model.Whisper(model.dims)
    reference.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])
    assert torch.equal(model.alignment_heads.to_dense(), reference.alignment_heads.to_dense())
    assert model.is_multilingual is False and model.dims.n_vocab == 51864


@pytest.fixture(scope="module")
def audio() -> tuple[np.ndarray, str]:
    """Two espeak sentences at 16 kHz (about 15 s) and their text."""
    parts = []
    for text in TEXTS:
        pcm, sr = espeak(text)
        parts += [resample(pcm.astype(np.float32) / 32768, sr, SR_HZ), np.zeros(SR_HZ // 2, np.float32)]
    return np.concatenate(parts).astype(np.float32), " ".join(TEXTS)


@pytest.mark.slow
def test_the_encoders_agree(tiny_en_pt, audio):
    import ctranslate2
    import whisper

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio[0]))[None]
    ct2 = ctranslate2.models.Whisper(embedded_dir("tiny.en"), device="cpu", compute_type="float32", intra_threads=2)
    ct2_out = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy())))
    with torch.no_grad():
        ow_out = load_converted(tiny_en_pt).encoder(mel).numpy()
    assert ow_out.shape == ct2_out.shape == (1, 1500, 384)
    assert np.abs(ow_out - ct2_out).max() < 1e-2 * np.abs(ct2_out).max()


@pytest.mark.slow
def test_both_backends_hear_the_same_words(tiny_en_pt, audio):
    """Same weights, same precision (float32): same words. Measured on this audio: both 0.021
    ("jumps" → "jump"). The default CPU faster-whisper (int8, quantized weights: another model)
    got 0.146 here ("roundfark stump, silver malaisey nog"), so the comparison is at float32."""
    x, text = audio
    fw = FasterWhisper(dataclasses.replace(CPU, compute_type="float32", audio_ctx="full"))  # openai-whisper: 30 s
    ow = OpenAIWhisper(dataclasses.replace(CPU, backend="openai-whisper", model=str(tiny_en_pt)))
    fw_words, ow_words = fw(x, ""), ow(x, "")
    wer_fw = wer(text, "".join(w for w, *_ in fw_words))
    wer_ow = wer(text, "".join(w for w, *_ in ow_words))
    print(f"WER faster-whisper (float32) {wer_fw:.3f}, openai-whisper (converted) {wer_ow:.3f}")
    assert wer_fw <= 0.1 and wer_ow <= 0.1  # they hear the speech, not just each other
    assert abs(wer_ow - wer_fw) <= MAX_WER_GAP
    assert [w for w, *_ in ow_words] == [w for w, *_ in fw_words]
    # word timestamps come from the alignment heads (set from the checkpoint): within 0.1 s
    assert max(abs(a[1] - b[1]) + abs(a[2] - b[2]) for a, b in zip(ow_words, fw_words, strict=True)) <= 0.1
