"""rtchat eval relevance: agent turns and dialogues found in lines, distractors drawn, ranks and
intervals computed by hand, a tiny model's scores against full forward passes, the command with
--baseline, shards and bad input."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tiny_models import WORDS, tiny_llama, tiny_llama_dir

from rtchat.datasets.lines import parse_line
from rtchat.evals.common import EvalError
from rtchat.evals.relevance import (
    CHANCE,
    DISTRACTORS,
    Context,
    Pool,
    Scorer,
    Turn,
    agent_turns,
    candidate_ids,
    context_ids,
    contexts,
    dialogue_ids,
    rank,
    report,
)

NAMES = ("Anna", "Ben", "Carl", "Dora", "Emma", "Finn", "Gina", "Hugo", "Iris", "Jack", "Kate", "Liam", "Mia", "Noah")


def header(name: str) -> str:
    return (f"Participants: S1 (name: {name}, age: unknown, sex: unknown), "
            "S2 (name: unknown, age: unknown, sex: unknown); Transcript:")


def dialogue(name: str, rng: random.Random, turns: int = 6) -> str:
    """One line: S1 and S2 alternate, 3–6 words each, some pauses."""
    body = []
    for t in range(turns):
        words = rng.sample(WORDS, rng.randint(3, 6))
        words.insert(1, f"({rng.randint(0, 1)}.{rng.randint(1, 9)})")
        body.append(f"S{t % 2 + 1}: " + " ".join(words))
    return header(name) + " " + " ".join(body)


def corpus(n: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [dialogue(name, rng) for name in NAMES[:n]]


def test_agent_turns_answer_the_user_drop_pauses_and_need_a_following_tag():
    line = header("Anna") + (" S1: hi there you (0.3) S2: hello how (0.2) are you (0.4) S1: fine thanks and you (0.5)"
                             " S2: mm-hmm S1: what about you S2: it is nice S2: the weather it is nice S1: ok"
                             " S2: what about you S1: sure S2: what about you")
    parse_line(line)
    turns = agent_turns(line, 7)
    # "mm-hmm" is too short, "the weather …" follows S2 not S1, "what about you" after "ok" goes on after a
    # backchannel, the last turn has no tag after it
    assert [(t.line, t.text) for t in turns] == [(7, "hello how are you"), (7, "it is nice")]
    units = line.partition("Transcript:")[2].split()
    assert units[turns[0].unit - 1] == "S2:" and units[turns[0].unit] == "hello"
    c = Context(line, turns[0], ("hello how are you",), False)
    assert c.text().endswith("Transcript: S1: hi there you (0.3) S2:")


def test_long_turns_are_cut_to_max_words():
    line = header("Anna") + " S1: hi there you S2: " + " ".join(["word"] * 30) + " S1: ok"
    assert agent_turns(line, 0)[0].text == " ".join(["word"] * 24)


def test_overlapping_windows_of_one_header_are_one_dialogue():
    words = " ".join(f"w{i}" for i in range(30))
    a = header("Anna") + " S1: " + words
    b = header("Anna") + " S1: " + " ".join(f"w{i}" for i in range(10, 40))  # overlaps a
    c = header("Anna") + " S1: " + " ".join(f"v{i}" for i in range(30))  # same header, other words
    d = header("Ben") + " S1: " + " ".join(f"w{i}" for i in range(10, 40))  # other header
    assert dialogue_ids([a, b, c, d]) == [0, 0, 1, 2]


def test_distractors_come_from_other_dialogues_of_the_band_and_the_seed_fixes_them():
    turns = [Turn(i, 5, f"reply number {i} here") for i in range(30)] + [Turn(30, 5, "a long reply " + "x " * 10)]
    dialogue_of = [i // 3 for i in range(31)]  # three turns per dialogue
    pool = Pool(turns, dialogue_of)
    drawn, widened = pool.draw(turns[0], dialogue_of[0], seed=1)
    assert len(set(drawn)) == DISTRACTORS and not widened
    assert all(int(t.split()[2]) >= 3 for t in drawn)  # not the turn's own dialogue (0, 1, 2)
    assert pool.draw(turns[0], 0, seed=1) == (drawn, False)
    assert pool.draw(turns[0], 0, seed=2)[0] != drawn
    long_drawn, widened = pool.draw(turns[30], dialogue_of[30], seed=1)  # alone in its band: the nearest join
    assert widened and len(long_drawn) == DISTRACTORS
    with pytest.raises(EvalError, match="only 2 agent turns of other dialogues"):
        Pool(turns[:5], dialogue_of).draw(turns[0], 0, seed=1)


def test_contexts_sample_dialogues_and_turns_by_seed():
    lines = corpus()
    sample = contexts(lines, 5, 2, seed=3)
    assert len(sample) == 5 and all(len(row) == 2 for row in sample)
    assert sample == contexts(lines, 5, 2, seed=3)
    assert sample != contexts(lines, 5, 2, seed=4)
    for row in sample:
        for c in row:
            assert c.candidates[0] == c.turn.text and c.turn.text not in c.candidates[1:]
            assert len(c.candidates) == DISTRACTORS + 1
            assert c.line == lines[c.turn.line]
    every = contexts(lines, 100, 100, seed=0)  # every dialogue, every turn: S2's 1st and 2nd (no tag after the 3rd)
    assert len(every) == len(lines) and sum(len(r) for r in every) == 2 * len(lines)


def test_rank_counts_ties_at_their_expected_value():
    assert rank([0.5] + [0.1] * 9) == (1.0, 1.0)
    assert rank([0.5, 0.9, 0.7] + [0.1] * 7) == (0.0, 1 / 3)
    assert rank([0.5, 0.5] + [0.1] * 8) == (0.5, (1 + 1 / 2) / 2)  # first or second, equally likely
    recall, rr = rank([0.0] * 10)
    assert recall == pytest.approx(CHANCE["recall_at_1_of_10"]) and rr == pytest.approx(CHANCE["mrr"])
    assert CHANCE["mrr"] == pytest.approx(0.2929, abs=1e-4)


def records(per_dialogue: list[list[int]], baseline: list[list[int]] | None = None) -> dict[int, list[dict]]:
    """A scorer stub: each context's scores put the true turn at the given rank (1 = first)."""

    def scores(r: int) -> list[float]:
        return [-float(r)] + [-float(k) for k in range(1, 11) if k != r]

    out = {}
    for k, row in enumerate(per_dialogue):
        out[k] = [{"context_end": f"d{k} c{i}", "candidates": ["a b c"] * 10, "widened": False,
                   "scores": {"model": scores(r)} | ({"baseline": scores(baseline[k][i])} if baseline else {})}
                  for i, r in enumerate(row)]
    return out


SETTING = {"model": "m", "baseline": "", "seed": 0}


def test_report_recall_and_mrr_by_hand_with_intervals_over_dialogues():
    out = report(SETTING, records([[1, 3], [2], []]))  # a dialogue without agent turns counts nowhere
    assert out["model"]["name"] == "m"
    assert out["model"]["recall_at_1_of_10"] == pytest.approx(1 / 3)
    assert out["model"]["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert out["counts"]["dialogues"] == 2 and out["counts"]["contexts"] == 3
    # resampling two dialogues: {1, 3} alone gives 0.5, {2} alone 0, both 1/3
    lo, hi = out["model"]["ci95"]["recall_at_1_of_10"]
    assert 0.0 <= lo <= 1 / 3 <= hi <= 0.5
    assert report(SETTING, records([[1, 3], [2], []])) == out  # the seed fixes the intervals
    assert "baseline" not in out and "gain" not in out
    with pytest.raises(EvalError, match="no agent turn to score"):
        report(SETTING, records([[], []]))


def test_report_with_a_baseline_pairs_the_same_contexts():
    out = report(SETTING | {"baseline": "b"}, records([[1, 1], [1]], baseline=[[2, 10], [1]]))
    assert out["baseline"]["name"] == "b"
    assert out["baseline"]["recall_at_1_of_10"] == pytest.approx(1 / 3)
    assert out["baseline"]["mrr"] == pytest.approx((1 / 2 + 1 / 10 + 1) / 3)
    assert out["gain"]["recall_at_1_of_10"] == pytest.approx(2 / 3)
    assert out["gain"]["mrr"] == pytest.approx(1 - (1 / 2 + 1 / 10 + 1) / 3)
    lo, hi = out["gain"]["ci95"]["recall_at_1_of_10"]
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0
    same = report(SETTING | {"baseline": "b"}, records([[1, 4], [2]], baseline=[[1, 4], [2]]))
    assert same["gain"]["recall_at_1_of_10"] == 0.0 and same["gain"]["ci95"]["mrr"] == [0.0, 0.0]


def full_pass_scores(model, tok, c, max_length: int) -> list[float]:
    """Each candidate's mean log-likelihood per token after the context, from one full forward pass each."""
    ctx = context_ids(tok, c, max_length)
    out = []
    for text in c.candidates:
        ids = candidate_ids(tok, text)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + ids])).logits[0].float(), -1)
        out.append(sum(float(logp[len(ctx) - 1 + r, t]) for r, t in enumerate(ids)) / len(ids))
    return out


def greedy_reply(model, tok, c, max_length: int) -> str:
    """transformers' greedy generate after the context, up to the next speaker tag."""
    ctx = context_ids(tok, c, max_length)
    with torch.no_grad():
        out = model.generate(torch.tensor([ctx]), max_new_tokens=40, do_sample=False, pad_token_id=0)[0, len(ctx):].tolist()
    s_id = tok(" S", add_special_tokens=False)["input_ids"][0]
    want = out[: out.index(s_id)] if s_id in out else out
    return tok.decode(want, skip_special_tokens=True).strip()


@pytest.mark.parametrize("tokenizer", ["bpe_tok", "sp_tok"])
def test_scores_are_mean_log_likelihoods_of_full_forward_passes(tokenizer, request):
    bpe_tok = request.getfixturevalue(tokenizer)
    model = tiny_llama(len(bpe_tok))
    scorer = Scorer(model, bpe_tok, max_length=60)
    lines = corpus()
    sample = contexts(lines, 4, 2, seed=0)
    lengths = []
    for c in [c for row in sample for c in row]:
        assert scorer.score(c) == pytest.approx(full_pass_scores(model, bpe_tok, c, 60), abs=1e-4)
        lengths.append(len(context_ids(bpe_tok, c, 60)))
    assert max(lengths) == 60  # the longer contexts were cut from the left


def test_replies_are_greedy_generate_up_to_the_next_tag(bpe_tok):
    model = tiny_llama(len(bpe_tok))
    scorer = Scorer(model, bpe_tok, max_length=512)
    c = contexts(corpus(), 1, 1, seed=0)[0][0]
    assert scorer.reply(c) == greedy_reply(model, bpe_tok, c, 512)


def test_the_command_writes_both_models_and_shards_merge_to_the_same_report(tmp_path, bpe_tok):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    base_dir = tiny_llama_dir(tmp_path / "b", bpe_tok, seed=1)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
    common = ["eval", "relevance", "--model", str(model_dir), "--baseline", str(base_dir), "--data", str(data),
              "--num-examples", "5", "--replies", "2"]
    assert cli([*common, "--json", str(tmp_path / "r.json")]) == 0
    out = json.loads((tmp_path / "r.json").read_text())
    for role, path in (("model", model_dir), ("baseline", base_dir)):
        assert out[role]["name"] == str(path)
        for key in ("recall_at_1_of_10", "mrr"):
            lo, hi = out[role]["ci95"][key]
            assert 0.0 <= lo <= out[role][key] <= hi <= 1.0
    assert out["counts"]["contexts"] == 10 and out["counts"]["dialogues"] == 5
    assert len(out["replies"]) == 2 and {"context_end", "true", "model", "baseline"} <= out["replies"][0].keys()
    assert out["gain"]["recall_at_1_of_10"] == pytest.approx(out["model"]["recall_at_1_of_10"]
                                                             - out["baseline"]["recall_at_1_of_10"])
    assert len(out["data_sha256"]) == 64 and out["git_commit"]

    parts = [str(tmp_path / f"p{k}.json") for k in range(2)]
    for k, part in enumerate(parts):
        assert cli([*common, "--shard", f"{k}/2", "--json", part]) == 0
    assert cli([*common, "--merge", *parts, "--json", str(tmp_path / "merged.json")]) == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    for key in ("model", "baseline", "gain", "counts", "replies"):
        assert merged[key] == out[key], key
    assert cli([*common[:-1], "3", "--merge", *parts, "--json", str(tmp_path / "x.json")]) == 1  # other options
    assert cli([*common, "--merge", parts[0], "--json", str(tmp_path / "x.json")]) == 1  # a part missing


def test_bad_input_is_refused_with_the_allowed_values(tmp_path, capsys):
    from rtchat.cli import main as cli

    data = tmp_path / "d.txt"
    data.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        cli(["eval", "relevance", "--model", "embeded", "--data", str(data), "--json", str(tmp_path / "r.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'embeded' is no model rtchat knows; allowed: embedded, embedded-v1, embedded-base" in err
    with pytest.raises(SystemExit) as exc:
        cli(["eval", "relevance", "--model", "embedded", "--data", str(tmp_path / "none.txt"), "--json", "r.json"])
    assert exc.value.code == 2
    assert "none.txt: no such file or folder; allowed: a file of transcript lines" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["eval", "relevance", "--model", "embedded", "--data", str(data), "--num-examples", "0", "--json", "r.json"])
    assert exc.value.code == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("not a transcript line\n", encoding="utf-8")
    assert cli(["eval", "relevance", "--model", "embedded", "--data", str(bad), "--json", str(tmp_path / "r.json")]) == 1
    assert "bad.txt:1: not a transcript line" in capsys.readouterr().out


def tiny_gemma3(vocab: int):
    """A random Gemma 3 text model whose first layer attends through a sliding window (a cache
    that cannot be cut back, as in the gemma-3-270m candidate)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024)
    return Gemma3ForCausalLM(cfg).eval()


def test_a_sliding_window_model_is_scored_and_answers_as_its_full_forward_passes_say(bpe_tok):
    model = tiny_gemma3(len(bpe_tok))
    scorer = Scorer(model, bpe_tok, max_length=60)
    assert not scorer.croppable
    for c in [c for row in contexts(corpus(), 3, 2, seed=0) for c in row]:
        assert scorer.score(c) == pytest.approx(full_pass_scores(model, bpe_tok, c, 60), abs=1e-4)
    c = contexts(corpus(), 1, 1, seed=0)[0][0]
    assert scorer.reply(c) == greedy_reply(model, bpe_tok, c, 60)
