"""The Bark engine on a tiny random checkpoint loaded from a folder (tiny_tts.py). Its processor
lists two voice presets: ``en_speaker_1`` with its prompt files, ``v2/en_speaker_8`` (the default)
without them, as on a machine that cannot reach the hub."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from tiny_tts import bark_dir

from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts import bark
from rtchat.nodes.tts.backend import TtsLoadError

SAMPLES_PER_SEMANTIC_TOKEN = 24000 / bark.SEMANTIC_RATE_HZ


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return bark_dir(tmp_path_factory.mktemp("bark"), {"v2/en_speaker_8": False, "en_speaker_1": True})


def load(path, voice: str = ""):
    return bark.load(TtsConfig(backend="bark", model=str(path), device="cpu", voice=voice))


def test_default_preset_that_cannot_load_falls_back_to_no_prompt(model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="rtchat.nodes.tts.bark"):
        engine = load(model_dir)
    assert engine.voice == "v2/en_speaker_8" and engine.prompt is None
    assert "'v2/en_speaker_8' cannot be loaded" in caplog.text and "without a voice prompt" in caplog.text
    (audio,) = engine.synthesize("Hello.")
    assert audio.dtype == np.int16 and audio.ndim == 1 and len(audio) > 0
    assert (engine.name, engine.sample_rate, engine.text_style, engine.handles_pauses) == ("bark", 24000, "bark", False)


def test_a_preset_with_its_files_becomes_the_history_prompt(model_dir, caplog):
    engine = load(model_dir, voice="en_speaker_1")
    assert engine.voice == "en_speaker_1"
    assert {k: tuple(v.shape) for k, v in engine.prompt.items()} == {
        "semantic_prompt": (60,), "coarse_prompt": (2, 90), "fine_prompt": (8, 90)
    }
    (audio,) = engine.synthesize("Hello.")
    assert audio.dtype == np.int16 and len(audio) > 0
    with caplog.at_level(logging.WARNING, logger="rtchat.nodes.tts.bark"):
        engine.set_voice("announcer")  # allowed, but this processor has no such preset
    assert engine.prompt is None and "offers no voice preset 'announcer'" in caplog.text


def test_unconditional_speaks_without_a_prompt(model_dir, caplog):
    engine = load(model_dir, voice="en_speaker_1")
    with caplog.at_level(logging.WARNING, logger="rtchat.nodes.tts.bark"):
        engine.set_voice("unconditional")
    assert engine.prompt is None and caplog.text == ""
    (audio,) = engine.synthesize("Hi!")
    assert len(audio) > 0


def test_voices_and_unknown_voice(model_dir):
    engine = load(model_dir, voice="unconditional")
    voices = engine.voices()
    assert len(voices) == 22 and {"v2/en_speaker_0", "v2/en_speaker_9", "en_speaker_8", "announcer"} <= set(voices)
    with pytest.raises(ValueError, match=r"'Voice 16'.*allowed: v2/en_speaker_0, .*unconditional"):
        engine.set_voice("Voice 16")
    with pytest.raises(TtsLoadError, match="en_speaker_10"):
        load(model_dir, voice="en_speaker_10")


def test_one_array_per_sentence_each_within_the_length_cap(model_dir):
    engine = load(model_dir, voice="unconditional")
    first, second = engine.synthesize("Unbelievably. Extraordinary, really...")
    # the random model never samples EOS, so it runs to the cap: 1.6 s per word
    assert len(first) <= bark.max_semantic_tokens("Unbelievably.") * SAMPLES_PER_SEMANTIC_TOKEN
    assert len(first) > 0.9 * bark.max_semantic_tokens("Unbelievably.") * SAMPLES_PER_SEMANTIC_TOKEN
    assert len(second) > len(first)
    assert list(engine.synthesize("... ...")) == []


def test_max_length_rule():
    assert bark.max_semantic_tokens("Hi") == round(1.6 * 49.9)
    assert bark.max_semantic_tokens("one two three") == round(3 * 1.6 * 49.9)
    assert bark.max_semantic_tokens("♪ la la") == round(3 * 2.0 * 49.9)
    assert bark.max_semantic_tokens(" ".join(["word"] * 40)) == 768
    assert bark.max_semantic_tokens("") == round(1.0 * 49.9)


def test_a_missing_folder_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "bark"
    with pytest.raises(TtsLoadError) as err:
        load(missing)
    assert str(missing) in str(err.value) and "hub id" in str(err.value) and "suno/bark-small" in str(err.value)


def test_a_folder_that_is_not_bark_says_which(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bark"}')
    with pytest.raises(TtsLoadError, match=f"cannot load the Bark model {tmp_path}"):
        load(tmp_path)
