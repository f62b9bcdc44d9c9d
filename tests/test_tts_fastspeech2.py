"""The FastSpeech2 engine on tiny random checkpoints loaded from folders (tiny_tts.py), with a
stand-in g2p_en (one phoneme per character)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from tiny_tts import FS2_FRAMES_PER_PHONEME, FS2_HOP, fake_g2p, fastspeech2_dir

from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts import fastspeech2
from rtchat.nodes.tts.backend import TtsLoadError
from rtchat.nodes.tts.hf import sentences, to_int16


@pytest.fixture(scope="module")
def g2p():
    with fake_g2p() as module:
        yield module


@pytest.fixture(scope="module")
def single_dir(g2p, tmp_path_factory):
    return fastspeech2_dir(tmp_path_factory.mktemp("fs2"))


@pytest.fixture(scope="module")
def multi_dir(g2p, tmp_path_factory):
    return fastspeech2_dir(tmp_path_factory.mktemp("fs2multi"), num_speakers=3)


def load(path, voice: str = ""):
    return fastspeech2.load(TtsConfig(backend="fastspeech2", model=str(path), device="cpu", voice=voice))


def say(engine, text: str) -> np.ndarray:
    return np.concatenate(list(engine.synthesize(text)))


def test_speaks_int16_at_22050_hz_with_pauses_left_to_the_core(single_dir):
    engine = load(single_dir)
    assert (engine.name, engine.sample_rate, engine.text_style, engine.handles_pauses) == ("fastspeech2", 22050, "plain", True)
    (audio,) = engine.synthesize("Hello there.")
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert np.abs(audio).max() > 0


def test_longer_text_gives_more_samples(single_dir):
    engine = load(single_dir)
    short, longer = say(engine, "Hi."), say(engine, "Hi, how are you doing today?")
    assert len(longer) > len(short)
    # every phoneme (here: character, plus the end token) lasts 3 frames of 256 samples
    assert len(short) == (len("HI.") + 1) * FS2_FRAMES_PER_PHONEME * FS2_HOP


def test_yields_one_array_per_sentence_and_nothing_for_no_phonemes(single_dir):
    engine = load(single_dir)
    pieces = list(engine.synthesize("Hello there. How are you doing? Fine, thanks!"))
    assert len(pieces) == 3 and all(len(p) > 0 for p in pieces)
    assert list(engine.synthesize("... ?")) == []


def test_single_speaker_model_offers_one_voice(single_dir):
    engine = load(single_dir)
    assert engine.voices() == ["default"]
    engine.set_voice("")
    engine.set_voice("default")
    with pytest.raises(ValueError, match=r"'Voice 16'.*allowed: 'default' or empty"):
        engine.set_voice("Voice 16")


def test_multi_speaker_model_offers_voice_n_as_speaker_n_minus_1(multi_dir):
    engine = load(multi_dir)
    assert engine.voices() == ["Voice 1", "Voice 2", "Voice 3"]
    first = say(engine, "Hello there.")
    engine.set_voice("Voice 2")
    assert engine.speaker_id == 1
    second = say(engine, "Hello there.")
    assert len(second) == len(first) and not np.array_equal(second, first)
    engine.set_voice("")
    assert engine.speaker_id == 0
    with pytest.raises(ValueError, match=r"'Voice 4'.*Voice 1 … Voice 3"):
        engine.set_voice("Voice 4")


def test_an_unknown_configured_voice_fails_the_load(single_dir):
    with pytest.raises(TtsLoadError, match="Voice 16"):
        load(single_dir, voice="Voice 16")


def test_a_missing_folder_names_the_path_and_the_fix(g2p, tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(TtsLoadError) as err:
        load(missing)
    assert str(missing) in str(err.value) and "hub id" in str(err.value) and fastspeech2.DEFAULT_MODEL in str(err.value)


def test_a_folder_without_a_model_says_what_is_expected(g2p, tmp_path):
    with pytest.raises(TtsLoadError, match=r"no config\.json"):
        load(tmp_path)


def test_a_broken_checkpoint_says_which_folder(g2p, single_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((single_dir / "config.json").read_text())
    with pytest.raises(TtsLoadError, match=re.escape(str(broken))):
        load(broken)


def test_without_g2p_en_the_error_says_what_to_install(single_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "g2p_en", None)  # import fails, find_spec finds nothing
    with pytest.raises(TtsLoadError, match=r"pip install g2p_en.*nltk\.downloader averaged_perceptron_tagger_eng cmudict"):
        load(single_dir)


def test_pause_pieces_compose_as_speech_exact_silence_speech(single_dir):
    """What the core does for a handles_pauses engine, by hand: split on the pause token, render
    the text pieces, put exactly rate × seconds zeros where the pause was."""
    engine = load(single_dir)
    pieces = re.split(r"(\(\d+\.\d+\))", "Um (0.5) I got a new dog!")
    audio = []
    for piece in pieces:
        if re.fullmatch(r"\(\d+\.\d+\)", piece):
            audio.append(np.zeros(int(engine.sample_rate * float(piece[1:-1])), dtype=np.int16))
        elif piece.strip():
            audio.append(say(engine, piece.strip()))
    um, pause, dog = audio
    assert len(pause) == 11025
    joined = np.concatenate(audio)
    assert np.array_equal(joined[: len(um)], say(engine, "Um"))
    assert not joined[len(um) : len(um) + 11025].any()
    assert np.array_equal(joined[len(um) + 11025 :], say(engine, "I got a new dog!"))
    assert np.abs(um).max() > 0 and np.abs(dog).max() > 0


def test_float_audio_is_scaled_to_full_int16_and_clipped():
    assert to_int16(np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.7, -3.0])).tolist() == [
        -32767, -16384, 0, 16384, 32767, 32767, -32767
    ]


def test_sentences_end_at_stops_but_not_inside_an_ellipsis_and_short_ones_join():
    assert sentences("Hello there. How are you doing? Fine, thanks!") == [
        "Hello there.", "How are you doing?", "Fine, thanks!"
    ]
    assert sentences("Yes. I think so. Fine!") == ["Yes. I think so. Fine!"]
    assert sentences("yeah.... that's cool") == ["yeah.... that's cool"]
    assert sentences("  ") == []
