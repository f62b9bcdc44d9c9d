"""``asr.audio_ctx``: the encoder sees the call's audio and a margin (``fit``, the default), not
Whisper's padded 30 s window (``full``). The words must be those of the 30 s path on the same
audio, and the encoder's input must follow the audio's length."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rtchat.configs import ConfigError, load
from rtchat.configs.schema import AsrConfig
from rtchat.evals.bench_asr import sentences, wer
from rtchat.nodes.asr.backends import MAX_TOKENS_PER_S, MIN_NEW_TOKENS, WINDOW_FRAMES, FasterWhisper, fit_frames
from rtchat.nodes.asr.frames import SR_HZ, resample
from rtchat.nodes.tts.espeak import synthesize as espeak

TEXTS = (
    "my sister found the long letter near the station",
    "could you tell me how to get to the museum from here",
    "we were thinking about going to the beach tomorrow if the weather holds",
    "the doctor repaired a wooden chair after lunch",
)


def test_the_encoder_sees_the_audio_and_the_margin_in_whole_seconds():
    assert fit_frames(4 * SR_HZ, 2.0) == 600  # 4 s of audio + 2 s: 600 mel frames of 10 ms
    assert fit_frames(SR_HZ + 160, 0.0) == 200  # 101 frames: rounded up to the next second
    assert fit_frames(0, 1.0) == 100
    assert fit_frames(29 * SR_HZ, 2.0) == WINDOW_FRAMES  # never more than Whisper's window
    # so a session's calls reuse a few input shapes (each new one leaves the heap larger): a
    # buffer of up to asr.max_buffer_s gives at most one shape per second
    cfg = AsrConfig()
    shapes = {fit_frames(n, cfg.audio_ctx_margin_s) for n in range(0, int(cfg.max_buffer_s * SR_HZ) + 1, 160)}
    assert len(shapes) == cfg.max_buffer_s + 1 and all(f % 100 == 0 for f in shapes)


def test_a_margin_outside_the_window_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="asr.audio_ctx_margin_s"):
        load("cpu", ["asr.audio_ctx_margin_s=-1"])
    with pytest.raises(ConfigError, match="audio_ctx"):
        load("cpu", ["asr.audio_ctx=short"])


@pytest.fixture(scope="module")
def utterances() -> tuple[list[np.ndarray], list[str]]:
    """Thirty-four sentences (thirty of ``bench asr``'s grammar, four of conversation), each as the
    node hands it to the recogniser: 0.3 s of pre-roll, the speech, 0.2 s after; and their texts."""
    out, texts = [], [*sentences(30, 11), *TEXTS]
    for text in texts:
        pcm, sr = espeak(text)
        x = resample(pcm.astype(np.float32) / 32768, sr, SR_HZ)
        out.append(np.concatenate([np.zeros(SR_HZ * 3 // 10, np.float32), x, np.zeros(SR_HZ // 5, np.float32)]))
    return out, texts


@pytest.mark.model
@pytest.mark.slow
def test_the_short_context_hears_the_words_of_the_30_s_window_and_encodes_only_the_audio(utterances):
    utterances, texts = utterances
    cpu = dataclasses.replace(AsrConfig(), device="cpu", threads=2)
    fit, full = FasterWhisper(cpu), FasterWhisper(dataclasses.replace(cpu, audio_ctx="full"))
    seen = []
    encode = fit.model.encode

    def spy(features):
        out = encode(features)
        seen[-1].append(2 * out.shape[1])  # the encoder halves the frames it is given
        return out

    fit.model.encode = spy
    heard, shifts = {"fit": [], "full": []}, []
    for x in utterances:
        seen.append([])
        fit_words, full_words = fit(x, ""), full(x, "")
        heard["fit"].append(" ".join(w for w, *_ in fit_words))
        heard["full"].append(" ".join(w for w, *_ in full_words))
        assert len(fit_words) <= MIN_NEW_TOKENS + len(x) / SR_HZ * MAX_TOKENS_PER_S
        if [w for w, *_ in fit_words] == [w for w, *_ in full_words]:
            shifts += [abs(a[k] - b[k]) for a, b in zip(fit_words, full_words, strict=True) for k in (1, 2)]
    reference = " ".join(texts)
    wer_fit, wer_full = wer(reference, " ".join(heard["fit"])), wer(reference, " ".join(heard["full"]))
    print(f"WER fit {wer_fit:.3f}, full {wer_full:.3f}; encoder frames {seen}")
    print(f"word edges moved: p50 {np.median(shifts):.3f} s, max {max(shifts):.2f} s")
    # the same words are placed alike: half the edges within a Whisper frame (20 ms), none by
    # more than a short word (Whisper's own timestamps are good to about 0.1–0.2 s)
    assert len(shifts) > 100 and np.median(shifts) <= 0.02 and max(shifts) <= 0.3
    assert wer_full <= 0.25 and wer_fit <= wer_full + 0.05  # both hear the speech (measured 0.161 vs 0.149)
    # the encoder saw each utterance and the 2 s margin, not the 3000 frames of the 30 s window
    # (a call whose decoder stopped early encodes the rest again: faster-whisper's seek)
    assert [frames[0] for frames in seen] == [fit_frames(len(x), cpu.audio_ctx_margin_s) for x in utterances]
    assert max(max(frames) for frames in seen) < WINDOW_FRAMES / 3
