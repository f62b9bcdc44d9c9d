"""The TTS core on virtual time with a scripted engine: streaming, silences, pre-render/release,
cancel, voices and engine failures."""

from __future__ import annotations

import numpy as np
import pytest

from rtchat.bus.events import (
    AgentCancel,
    AgentPause,
    AgentPrerender,
    AgentRelease,
    AgentSay,
    ConfigChange,
    NodeError,
    Reset,
    TtsAudio,
)
from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.core import TtsCore, word_groups

SR = 1000  # the fake engine's rate: 1 sample per ms
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class FakeEngine:
    """Speech = 10 samples of value 7 per character, streamed in two arrays; scripted failures."""

    name = "fake"
    sample_rate = SR
    text_style = "plain"
    handles_pauses = True

    def __init__(self, fail_on: tuple[str, ...] = ()):
        self.calls: list[str] = []
        self.voice = ""
        self.fail_on = fail_on

    def voices(self):
        return ["alice", "bob"]

    def set_voice(self, voice):
        if voice not in ("", *self.voices()):
            raise ValueError(f"no voice {voice!r}; allowed: alice, bob")
        self.voice = voice

    def synthesize(self, text):
        self.calls.append(text)
        if any(f in text for f in self.fail_on):
            raise RuntimeError("the engine broke")
        if "mute" in text:  # text the engine has no sound for (Piper: no phonemes)
            return
        n = 10 * len(text)
        yield np.full(n // 2, 7, dtype=np.int16)
        yield np.full(n - n // 2, 7, dtype=np.int16)


def make(cfg: TtsConfig | None = None, engine: FakeEngine | None = None, timer=None) -> tuple[TtsCore, FakeEngine]:
    engine = engine or FakeEngine()
    return TtsCore(cfg or TtsConfig(), engine, timer=timer), engine


def say(text: str, chunk: int = 0, turn: int = 1, gen: int = 0) -> AgentSay:
    return AgentSay(turn=turn, gen=gen, text=text, chunk=chunk)


def drain(core: TtsCore, now: int = T0) -> list:
    """Tick while the core is due (at most 10,000 times)."""
    out = []
    for _ in range(10_000):
        if core.deadline_ns() is None:
            return out
        assert core.deadline_ns() <= now
        out += core.on_tick(now)
    raise AssertionError("the core never finished")


def pcm(ev: TtsAudio) -> np.ndarray:
    return np.frombuffer(ev.pcm, dtype=np.int16)


def summary(events) -> list[tuple]:
    return [(e.chunk, e.text, e.n_samples, e.last) for e in events if isinstance(e, TtsAudio)]


# ---------------------------------------------------------------- agent.say


def test_a_say_streams_one_piece_per_tick_first_sentence_before_the_rest_is_rendered():
    core, engine = make()
    assert core.deadline_ns() is None
    assert core.on_event(say(" Hello there, my friend. How are you doing today? (0.5)", chunk=3), T0) == []
    assert core.deadline_ns() == T0 and engine.calls == []  # nothing rendered in the event handler

    first = core.on_tick(T0)
    assert summary(first) == [(3, "Hello there, my friend.", 230, False)]
    assert engine.calls == ["Hello there, my friend."]  # the second sentence is not rendered yet
    assert np.all(pcm(first[0]) == 7) and first[0].sr_hz == SR and first[0].turn == 1 and first[0].gen == 0

    assert summary(core.on_tick(T0)) == [(3, "How are you doing today?", 240, False)]
    silence = core.on_tick(T0)
    assert summary(silence) == [(3, "", 500, True)]  # a trailing pause: exact zeros, the chunk's last piece
    assert not pcm(silence[0]).any()
    assert core.deadline_ns() is None and core.on_tick(T0) == []
    assert core.stats()["says"] == 1 and core.stats()["pieces"] == 3


def test_says_go_out_in_order_chunk_by_chunk():
    core, _ = make()
    core.on_event(say(" Um (0.5) I got a new dog!", chunk=0), T0)
    core.on_event(say(" She is (0.25) tiny.", chunk=1), T0)
    assert summary(drain(core)) == [
        (0, "Um", 20, False), (0, "", 500, False), (0, "I got a new dog!", 160, True),
        (1, "She is", 60, False), (1, "", 250, False), (1, "tiny.", 50, True),
    ]


def test_pause_silences_are_exact_at_the_engine_rate():
    engine = FakeEngine()
    engine.sample_rate = 22_050
    core, _ = make(engine=engine)
    core.on_event(say(" (0.4) <p> (0.8) (0.3) (1.)"), T0)
    out = drain(core)
    assert [e.n_samples for e in out] == [8820, 17640, 6615, 22050]
    assert all(len(pcm(e)) == e.n_samples and not pcm(e).any() for e in out)
    assert [e.last for e in out] == [False, False, False, True]


def test_text_with_only_tags_says_nothing_and_is_counted():
    core, engine = make()
    assert core.on_event(say(" &=sniff [% whispers] xxx"), T0) == []
    assert core.deadline_ns() is None and drain(core) == [] and engine.calls == []
    assert core.stats()["empty"] == 1


def test_a_piece_the_engine_has_no_sound_for_is_not_sent():
    core, _ = make()
    core.on_event(say(" mute one here. (0.1) Then real words.", chunk=0), T0)
    core.on_event(say(" mute two here.", chunk=1), T0)
    core.on_event(say(" Real words first. (0.1) mute three here.", chunk=2), T0)
    assert summary(drain(core)) == [
        (0, "", 100, False), (0, "Then real words.", 160, True),
        (2, "Real words first.", 170, False), (2, "", 100, False), (2, "mute three here.", 0, True),  # closes chunk 2
    ]
    assert core.stats()["empty"] == 1  # chunk 1 said nothing at all


def test_a_pause_event_renders_nothing_and_is_counted():
    core, _ = make()
    assert core.on_event(AgentPause(turn=1, gen=0, duration_ns=800 * MS), T0) == []
    assert core.deadline_ns() is None and core.stats()["pauses"] == 1


def test_2000_characters_in_one_chunk_stream_in_pieces_of_at_most_max_chars():
    core, engine = make(TtsConfig(max_chars=100))
    words = [f"w{i:03d}" for i in range(400)]  # 2,000 characters with the spaces, no sentence end
    core.on_event(say(" " + " ".join(words), chunk=2), T0)
    first = core.on_tick(T0)
    assert len(engine.calls) == 1 and len(first[0].text) <= 100  # first sound after one piece
    out = first + drain(core)
    assert len(out) >= 20 and all(len(e.text) <= 100 for e in out)
    assert [e.last for e in out] == [False] * (len(out) - 1) + [True]
    assert " ".join(e.text for e in out).split() == words


# ---------------------------------------------------------------- pre-render and release


def prerender(chunks, turn=3, gen=0):
    return AgentPrerender(turn=turn, gen=gen, chunks=tuple(chunks))


def release(text, n, chunk=0, turn=4, gen=0):
    return AgentRelease(turn=turn, gen=gen, n_chunks=n, text=text, chunk=chunk)


def test_a_prerendered_reply_is_released_at_once_with_the_release_turn_and_chunk_indices():
    core, engine = make()
    assert core.on_event(prerender([" Oh nice,", " what kind (0.2)"]), T0) == []
    assert drain(core) == []  # rendered into the cache, nothing sent
    assert engine.calls == ["Oh nice,", "what kind"]
    out = core.on_event(release(" Oh nice, what kind (0.2)", 2, chunk=5), T0 + 900 * MS)
    assert summary(out) == [(5, "Oh nice,", 80, True), (6, "what kind", 90, False), (6, "", 200, True)]
    assert all(e.turn == 4 and e.gen == 0 for e in out)
    assert engine.calls == ["Oh nice,", "what kind"]  # no synthesis at release
    assert core.stats()["releases_cached"] == 1 and core.stats()["cached_chunks"] == 0


def test_a_release_before_the_cache_is_rendered_renders_what_is_missing_then_sends_all():
    core, engine = make()
    core.on_event(prerender([" Sure,", " why not?"]), T0)
    core.on_tick(T0)  # one piece rendered
    out = core.on_event(release(" Sure,  why not?", 2, chunk=1), T0)
    assert summary(out) == [(1, "Sure,", 50, True), (2, "why not?", 80, True)]
    assert engine.calls == ["Sure,", "why not?"] and core.deadline_ns() is None


def test_releases_take_the_cache_chunk_by_chunk():
    core, _ = make()
    core.on_event(prerender([" Oh nice,", " what kind?"]), T0)
    drain(core)
    assert summary(core.on_event(release(" Oh nice,", 1, chunk=0), T0)) == [(0, "Oh nice,", 80, True)]
    assert summary(core.on_event(release(" what kind?", 1, chunk=1), T0)) == [(1, "what kind?", 100, True)]
    assert core.stats()["releases_cached"] == 2


def test_a_release_without_the_unfinished_pause_the_agent_dropped_still_uses_the_cache():
    core, engine = make()
    core.on_event(prerender([" I think (0."]), T0)
    drain(core)
    assert summary(core.on_event(release(" I think", 1, chunk=0), T0)) == [(0, "I think", 70, True)]
    assert engine.calls == ["I think"]


def test_a_release_with_other_words_renders_its_text_one_word_group_per_chunk():
    core, engine = make()
    core.on_event(prerender([" Oh nice,", " what kind?"]), T0)
    drain(core)
    assert core.on_event(release(" Oh wow, what breed is it?", 2, chunk=7), T0) == []
    assert summary(drain(core)) == [(7, "Oh wow, what", 120, True), (8, "breed is it?", 120, True)]
    assert core.stats()["releases_rendered"] == 1 and core.stats()["cached_chunks"] == 0  # the stale cache is gone
    assert engine.calls[-2:] == ["Oh wow, what", "breed is it?"]


def test_a_release_never_prerendered_still_reports_every_chunk_index():
    core, _ = make()
    core.on_event(release(" one two three four five", 3, chunk=4), T0)
    assert [(c, t, last) for c, t, _, last in summary(drain(core))] == [
        (4, "one two", True), (5, "three four", True), (6, "five", True)]


def test_a_cached_release_waits_behind_say_work_already_queued():
    core, engine = make()
    core.on_event(prerender([" Right."]), T0)
    drain(core)
    core.on_event(say(" First this sentence. Then that one.", chunk=0), T0)
    assert core.on_event(release(" Right.", 1, chunk=1), T0) == []
    assert [(c, t) for c, t, _, _ in summary(drain(core))] == [(0, "First this sentence."), (0, "Then that one."), (1, "Right.")]


def test_say_work_is_rendered_before_the_cache():
    core, engine = make()
    core.on_event(prerender([" Later words."]), T0)
    core.on_event(say(" Now words."), T0)
    core.on_tick(T0)
    assert engine.calls == ["Now words."]
    core.on_tick(T0)
    assert engine.calls == ["Now words.", "Later words."]


def test_a_new_prerender_replaces_the_cache():
    core, engine = make()
    core.on_event(prerender([" Old guess."]), T0)
    core.on_event(prerender([" New guess."]), T0)
    drain(core)
    assert engine.calls == ["New guess."]
    assert core.on_event(release(" Old guess.", 1), T0) == []  # not in the cache: rendered
    assert core.stats()["releases_rendered"] == 1


def test_word_groups_split_evenly_and_keep_every_word():
    assert word_groups(" a b c d e", 2) == [" a b c", " d e"]
    assert word_groups(" a", 3) == [" a", "", ""]


# ---------------------------------------------------------------- cancel and reset


def test_cancel_drops_older_generations_at_once_and_ignores_their_later_events():
    core, engine = make()
    core.on_event(say(" One sentence here. Another sentence here.", gen=0), T0)
    core.on_event(prerender([" Cached words."], gen=0), T0)
    assert len(core.on_tick(T0)) == 1
    assert core.on_event(AgentCancel(turn=1, gen=1), T0) == []
    assert core.deadline_ns() is None and drain(core) == []
    assert core.stats()["cached_chunks"] == 0 and core.stats()["cancels"] == 1
    assert core.on_event(say(" Too late now.", gen=0), T0) == [] and core.deadline_ns() is None
    assert core.on_event(release(" Cached words.", 1, gen=1), T0) == []  # the cache of gen 0 is gone: rendered
    assert summary(drain(core)) == [(0, "Cached words.", 130, True)]
    assert engine.calls == ["One sentence here.", "Cached words."]
    assert core.stats()["dropped"] >= 3


def test_a_cancel_keeps_work_of_its_own_generation():
    core, _ = make()
    core.on_event(say(" Keep me.", gen=2), T0)
    core.on_event(AgentCancel(turn=1, gen=2), T0)
    assert summary(drain(core)) == [(0, "Keep me.", 80, True)]


def test_reset_drops_everything_and_accepts_generations_from_zero_again():
    core, _ = make()
    core.on_event(AgentCancel(turn=1, gen=5), T0)
    core.on_event(say(" Pending words.", gen=5), T0)
    core.on_event(prerender([" Cached."], gen=5), T0)
    core.on_event(Reset(reason="new conversation"), T0)
    assert core.deadline_ns() is None and core.stats()["cached_chunks"] == 0
    core.on_event(say(" Fresh start.", gen=0), T0)
    assert summary(drain(core)) == [(0, "Fresh start.", 120, True)]


# ---------------------------------------------------------------- a restarted tts


@pytest.mark.parametrize("killed_saw_the_prerender", [True, False])
def test_a_restarted_tts_speaks_a_release_whose_prerender_it_lost_from_the_release_text_once(killed_saw_the_prerender):
    killed, _ = make()
    if killed_saw_the_prerender:  # else it came while no tts was up
        killed.on_event(prerender([" Oh nice,", " what kind?"], gen=3), T0)
        drain(killed)
    restarted, engine = make()  # SIGKILL and a new process: nothing of the cache survives
    out = restarted.on_event(release(" Oh nice, what kind?", 2, chunk=5, gen=3), T0 + 2000 * MS)
    out += drain(restarted, T0 + 2000 * MS)
    assert summary(out) == [(5, "Oh nice,", 80, True), (6, "what kind?", 100, True)]  # no silence, each word once
    assert all((e.turn, e.gen) == (4, 3) for e in out) and engine.calls == ["Oh nice,", "what kind?"]
    assert restarted.stats()["releases_rendered"] == 1


def test_a_restarted_tts_takes_generations_above_zero_as_they_come():
    core, engine = make()  # min_gen is 0 again; the agent's gens went on (they survive its own restarts)
    core.on_event(say(" First one.", chunk=0, gen=6), T0)
    core.on_event(say(" Second one.", chunk=1, gen=6), T0)
    assert summary(core.on_tick(T0)) == [(0, "First one.", 100, True)]
    core.on_event(AgentCancel(turn=1, gen=7), T0)
    assert drain(core) == [] and core.on_event(say(" Stale.", gen=6), T0) == []
    core.on_event(prerender([" Sure."], gen=7), T0)
    drain(core)
    assert summary(core.on_event(release(" Sure.", 1, gen=7), T0)) == [(0, "Sure.", 50, True)]
    assert engine.calls == ["First one.", "Sure."] and core.stats()["releases_cached"] == 1


# ---------------------------------------------------------------- config, failures, stats


def test_ctl_config_sets_the_voice_and_refuses_an_unknown_one_changing_nothing():
    core, engine = make()
    core.on_event(ConfigChange(changes={"tts.voice": "bob", "agent.interval_s": 1.0}), T0)
    assert engine.voice == "bob" and core.cfg.voice == "bob"
    with pytest.raises(ValueError, match="alice, bob"):
        core.on_event(ConfigChange(changes={"tts.voice": "carol", "tts.max_chars": 50}), T0)
    assert engine.voice == "bob" and core.cfg.max_chars == 400
    with pytest.raises(ValueError, match="tts.backend cannot change"):
        core.on_event(ConfigChange(changes={"tts.backend": "espeak"}), T0)
    core.on_event(ConfigChange(changes={"tts.max_chars": 50}), T0)
    assert core.cfg.max_chars == 50


def test_an_engine_failure_is_reported_closes_the_chunk_and_the_node_goes_on():
    core, _ = make(engine=FakeEngine(fail_on=("BOOM",)))
    core.on_event(say(" This part is fine. BOOM goes this part. Never rendered.", chunk=0), T0)
    core.on_event(say(" The next chunk works.", chunk=1), T0)
    out = drain(core)
    errors = [e for e in out if isinstance(e, NodeError)]
    assert len(errors) == 1 and "the engine broke" in errors[0].detail and errors[0].kind == "handler"
    assert summary(out) == [(0, "This part is fine.", 180, False), (0, "", 0, True), (1, "The next chunk works.", 210, True)]
    assert core.stats()["engine_errors"] == 1


def test_an_engine_failure_in_the_cache_drops_it_and_the_release_renders_again():
    core, _ = make(engine=FakeEngine(fail_on=("BOOM",)))
    core.on_event(prerender([" BOOM here."]), T0)
    assert [type(e) for e in drain(core)] == [NodeError]
    assert core.stats()["cached_chunks"] == 0
    core.on_event(release(" BOOM here.", 1), T0)
    assert [type(e) for e in drain(core)] == [NodeError]  # rendered again on release, failed again, reported


def test_a_bad_release_raises_and_changes_nothing():
    core, _ = make()
    core.on_event(prerender([" Kept."]), T0)
    drain(core)
    with pytest.raises(ValueError, match="n_chunks"):
        core.on_event(release(" Kept.", 0), T0)
    assert summary(core.on_event(release(" Kept.", 1), T0)) == [(0, "Kept.", 50, True)]


def test_stats_report_time_to_first_audio_and_real_time_factor():
    clock = iter(range(0, 10**12, 5 * MS))  # every timer read is 5 ms later
    core, _ = make(timer=lambda: next(clock))
    core.on_event(say(" Hello there, my friend. How are you?"), T0)
    core.on_tick(T0 + 20 * MS)  # 20 ms in the queue, then the render
    stats = core.stats()
    assert stats["ttfa_ms_last"] == pytest.approx(20 + 15)  # queue + the tick's render as measured
    assert stats["rtf"] == pytest.approx(0.005 / 0.23)


def test_a_bark_style_engine_gets_pauses_as_dots_and_no_silence():
    engine = FakeEngine()
    engine.text_style, engine.handles_pauses = "bark", False
    core, _ = make(engine=engine)
    core.on_event(say(" hhh yeah. (1.2) that's cool &=laughs"), T0)
    assert summary(drain(core)) == [(0, "[breath] yeah... that's cool [laughs]", 370, True)]


class LeadInEngine(FakeEngine):
    """Speech as Piper gives it: 50 ms of near silence (-70 dBFS) before the words (-20 dBFS)."""

    def synthesize(self, text):
        self.calls.append(text)
        yield np.concatenate([np.full(50, 10, dtype=np.int16), np.full(10 * len(text), 3277, dtype=np.int16)])


def test_the_agents_sound_starts_with_its_words_not_the_engines_quiet_lead_in():
    core, _ = make(engine=LeadInEngine())
    core.on_event(say(" (0.1) hi"), T0)
    pieces = [e for e in drain(core) if isinstance(e, TtsAudio)]
    pauses, words = (np.frombuffer(p.pcm, dtype=np.int16) for p in pieces)
    assert len(pauses) == 100 and not pauses.any()  # the pause the agent wrote: exact, untouched
    assert len(words) == 5 + 20 and (words[:5] == 10).all() and (words[5:] == 3277).all()  # 5 ms kept of the 50


def test_an_engine_that_gives_only_quiet_sound_keeps_it():
    core, _ = make()  # FakeEngine's speech is -73 dBFS throughout: nothing to cut it down to
    core.on_event(say(" hi"), T0)
    (piece,) = [e for e in drain(core) if isinstance(e, TtsAudio)]
    assert piece.n_samples == 20
