"""rtchat eval switch: the point selection rule on parsed lines, the metrics, and a run on a tiny
model and a scripted one."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tiny_models import PREFIX, tiny_llama, tiny_llama_dir

from rtchat.datasets.lines import parse_line
from rtchat.evals.common import EvalError
from rtchat.evals.switch import auc, evaluate, points, predict, predicted_switch, score

LINE = PREFIX + " S1: how was it (0.3) the trip I mean (0.8) S2: great (0.4) really great S1: good"
LINES = [
    LINE,
    PREFIX + " S1: hello there (0.5) how are you S2: fine thanks (0.2) and you (1.1) S1: fine",
    PREFIX + " S1: what about the weather S2: it is nice (0.3) sure",
]


def test_switch_points_end_after_the_turn_final_pause_and_name_the_speaker():
    parse_line(LINE)  # a real transcript line
    switch = [p for p in points(LINE, random.Random(0)) if p.switch]
    assert [p.prefix.split("Transcript: ")[1] for p in switch] == [
        "S1: how was it (0.3) the trip I mean (0.8)",
        "S1: how was it (0.3) the trip I mean (0.8) S2: great (0.4) really great",
    ]
    assert [(p.speaker, p.after_pause) for p in switch] == [("1", True), ("2", False)]


def test_within_turn_points_match_switch_count_half_after_pause_never_after_a_tag():
    for seed in range(5):
        pts = points(LINE, random.Random(seed))
        within = [p for p in pts if not p.switch]
        assert len(within) == 2  # as many as switch points
        assert sum(p.after_pause for p in within) == 1  # half right after a within-turn pause
        for p in within:
            last = p.prefix.split()[-1]
            assert not last.endswith(":")  # never straight after a tag
            assert p.after_pause == last.startswith("(")
            assert not LINE[len(p.prefix) :].lstrip().startswith(("S1:", "S2:"))  # the next unit is not a tag


def test_predicted_switch_needs_the_other_speakers_tag():
    assert predicted_switch(" S2:", "1") and predicted_switch("S2: yes", "1") and predicted_switch(" ok S1", "2")
    assert not predicted_switch(" S1:", "1") and not predicted_switch(" (0.5)", "1") and not predicted_switch(" Sure", "1")


def test_auc_ranks_and_ties():
    assert auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert auc([0.5], [True]) is None
    # against the definition (every positive-negative pair, ties half) on random scores with ties
    rng = random.Random(3)
    for _ in range(20):
        scores = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.9]) for _ in range(30)]
        labels = [rng.random() < 0.4 for _ in range(30)]
        pos = [q for q, y in zip(scores, labels, strict=True) if y]
        neg = [q for q, y in zip(scores, labels, strict=True) if not y]
        pairs = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
        assert auc(scores, labels) == pytest.approx(pairs)


def test_tiny_model_gives_every_key_in_range(bpe_tok, tmp_path):
    bpe_tok.pad_token = bpe_tok.eos_token
    report = evaluate(tiny_llama(len(bpe_tok)), bpe_tok, LINES, num_examples=3, seed=0)
    for key in ("precision", "recall", "f1", "auc", "f1_after_pause"):
        assert 0.0 <= report[key] <= 1.0, key
    counts = report["counts"]
    assert counts["switch"] == counts["within_turn"] == 5 and counts["lines"] == 3
    kinds = report["after_pause_by_previous_word"]
    assert sum(c["holds"] + c["switches"] for c in kinds.values()) == counts["after_pause"]
    assert all(c["hold_share_in_lines"] is None or 0 <= c["hold_share_in_lines"] <= 1 for c in kinds.values())
    assert kinds["content_word"]["hold_share_in_lines"] is not None
    json.dumps(report)


def test_continuations_and_switch_probability_equal_greedy_generate_on_each_prefix(bpe_tok):
    from transformers import GenerationConfig

    bpe_tok.pad_token = bpe_tok.eos_token
    torch.manual_seed(3)
    model = tiny_llama(len(bpe_tok)).eval()
    s_id = bpe_tok(" S", add_special_tokens=False)["input_ids"][0]
    gen = GenerationConfig(max_new_tokens=3, do_sample=False, pad_token_id=bpe_tok.eos_token_id,
                           output_scores=True, return_dict_in_generate=True)
    for line in LINES:
        pts = points(line, random.Random(0))
        got = predict(model, bpe_tok, line, pts, max_length=512)
        assert [p for p, _, _ in got] == pts
        for p, text, q in got:
            enc = bpe_tok(p.prefix, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**enc, generation_config=gen)
            new = out.sequences[0, enc["input_ids"].shape[1]:].tolist()
            assert text == bpe_tok.decode(new, skip_special_tokens=True), p.prefix
            assert q == pytest.approx(torch.softmax(out.scores[0][0].float(), -1)[s_id].item(), rel=1e-4, abs=1e-7)


def test_points_cut_off_with_the_beginning_of_a_long_line_are_not_scored(bpe_tok):
    model = tiny_llama(len(bpe_tok)).eval()
    pts = points(LINE, random.Random(0))
    n = len(bpe_tok(LINE)["input_ids"])
    kept = predict(model, bpe_tok, LINE, pts, max_length=n - 6)  # loses the header's first tokens only
    assert [p for p, _, _ in kept] == pts
    late = predict(model, bpe_tok, LINE, pts, max_length=12)  # keeps only the end of the line
    assert 0 < len(late) < len(pts)
    assert all(len(bpe_tok(p.prefix)["input_ids"]) > n - 12 for p, _, _ in late)


def test_scripted_results_score_exactly():
    line = PREFIX + " S1: how was it (0.3) the trip I mean (0.8) S2: great really great S1: good"
    pts = points(line, random.Random(0))
    # a model that says " S2:" after every pause by S1 and " (0.5" otherwise: the switch after
    # "(0.8)" is found, the one after "really great" missed, the within-turn point after "(0.3)"
    # wrongly called a switch, the one after a word not.
    results = []
    for p in pts:
        switch = p.prefix.endswith(")") and p.speaker == "1"
        results.append((p, " S2:" if switch else " (0.5", 0.9 if switch else 0.1))
    report = score(results, lines=1)
    assert [(p.switch, p.after_pause) for p in pts] == [(True, True), (True, False), (False, True), (False, False)]
    assert report["counts"]["tp"] == 1 and report["counts"]["fp"] == 1 and report["counts"]["fn"] == 1
    assert report["precision"] == pytest.approx(0.5) and report["recall"] == pytest.approx(0.5)
    assert report["auc"] == pytest.approx(0.5)
    assert report["f1_after_pause"] == pytest.approx(2 / 3)
    assert report["ci95"] is None  # no line of each point given
    assert report["auc_after_pause"] == pytest.approx(0.5)  # the switch after "(0.8)" and the hold after "(0.3)" tie
    # calling every point a switch: 2 switches, 2 within-turn points; after a pause 1 and 1
    assert report["always_switch"] == {"f1": pytest.approx(2 / 3), "f1_after_pause": pytest.approx(2 / 3)}


def test_bootstrap_interval_over_lines():
    from rtchat.evals.switch import bootstrap_f1

    assert bootstrap_f1([(2, 1, 1)] * 20) == [pytest.approx(2 / 3)] * 2  # every line alike: no spread
    lines = [(3, 0, 0)] * 10 + [(0, 2, 2)] * 10  # half perfect, half all wrong: F1 0.6 in all
    lo, hi = bootstrap_f1(lines, seed=1)
    assert lo < 0.6 < hi and hi - lo > 0.1
    assert bootstrap_f1(lines, seed=1) == [lo, hi]  # deterministic for a seed


def test_score_ci95_resamples_whole_lines():
    line = PREFIX + " S1: how was it (0.3) the trip I mean (0.8) S2: great really great S1: good"
    pts = points(line, random.Random(0))
    other = {"1": " S2:", "2": " S1:"}
    right = [(p, other[p.speaker] if p.switch else " yes", 0.5) for p in pts]  # every point right
    wrong = [(p, " yes" if p.switch else other[p.speaker], 0.5) for p in pts]  # every point wrong
    report = score(right + wrong, lines=2, line_of=[0] * len(pts) + [1] * len(pts))
    assert report["f1"] == pytest.approx(0.5)
    lo, hi = report["ci95"]["f1"]
    assert lo == 0.0 and hi == 1.0  # resamples of two lines: both wrong, mixed, both right
    assert report["ci95"]["f1_after_pause"][0] == 0.0 and report["ci95"]["unit"] == "line"


def test_gain_pairs_points_and_bootstraps_the_difference():
    from rtchat.evals.switch import gain

    line = PREFIX + " S1: how was it (0.3) the trip I mean (0.8) S2: great really great S1: good"
    pts = points(line, random.Random(0))
    other = {"1": " S2:", "2": " S1:"}
    right = [(p, other[p.speaker] if p.switch else " yes", 0.5) for p in pts]
    wrong = [(p, " yes" if p.switch else other[p.speaker], 0.5) for p in pts]
    # line 0: a right, b wrong; line 1: both right -> a's F1 1.0, b's 0.5 (tp 2, fp 2, fn 2)
    a, a_line = right + right, [0] * len(pts) + [1] * len(pts)
    b, b_line = wrong + right, a_line
    g = gain(a, a_line, b, b_line)
    assert g["points"] == 2 * len(pts)
    assert g["f1"] == pytest.approx(0.5)
    lo, hi = g["ci95"]["f1"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)  # resamples of line 1 only, of line 0 only
    assert g["f1_after_pause"] == pytest.approx(0.5)
    # the baseline scored only line 1 (its tokenizer cut line 0): the gain counts common points only
    g = gain(a, a_line, right, [1] * len(pts))
    assert g["points"] == len(pts) and g["f1"] == 0.0
    with pytest.raises(EvalError, match="no point in common"):
        gain(a, a_line, right, [7] * len(pts))


def test_cli_writes_json_and_embedded_without_adapter_says_how(tmp_path, bpe_tok, monkeypatch, capsys):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    assert cli(["eval", "switch", "--model", str(model_dir), "--data", str(data), "--num-examples", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"precision", "recall", "f1", "auc", "f1_after_pause", "ci95", "counts", "config"} <= report.keys()
    lo, hi = report["ci95"]["f1"]
    assert lo <= report["f1"] <= hi
    # --baseline: the same model as its own baseline gains exactly nothing, on every point
    assert cli(["eval", "switch", "--model", str(model_dir), "--baseline", str(model_dir), "--data", str(data),
                "--num-examples", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["baseline"]["model"] == str(model_dir) and report["baseline"]["f1"] == report["f1"]
    assert report["gain"]["f1"] == 0.0 and report["gain"]["ci95"]["f1"] == [0.0, 0.0]
    assert report["gain"]["points"] == report["counts"]["points"]
    assert report["config"]["num_examples"] == 2 and len(report["config"]["data_sha256"]) == 64

    monkeypatch.setenv("RTCHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("rtchat.configs.models.SHIPPED_ADAPTER", tmp_path / "no-shipped-adapter")
    assert cli(["eval", "switch", "--model", "embedded", "--data", str(data), "--num-examples", "1", "--json", str(out)]) == 1
    assert "rtchat train --model embedded-base --method lora" in capsys.readouterr().out


def test_after_pause_points_split_by_the_word_before_the_pause():
    from rtchat.evals.switch import by_previous_word, candidates, hold_share, previous_word_kind

    assert previous_word_kind("Transcript: S1: so um (0.4)") == "filler"
    assert previous_word_kind("Transcript: S1: I went to the (0.4)") == "function_word"
    assert previous_word_kind("Transcript: S1: how was it (0.3) the trip (0.8)") == "content_word"
    line = PREFIX + " S1: so um (0.4) we went to the (0.3) lake (0.5) S2: nice (0.2) S1: yes"
    share = hold_share([candidates(line), candidates(line)])
    assert share["filler"] == {"holds": 2, "switches": 0, "hold_share": 1.0}
    assert share["function_word"] == {"holds": 2, "switches": 0, "hold_share": 1.0}
    assert share["content_word"] == {"holds": 0, "switches": 4, "hold_share": 0.0}  # after "lake", after "nice"
    pts = [p for p in points(line, random.Random(0)) if p.after_pause]
    pred = [p.prefix.endswith("(0.5)") for p in pts]  # finds S1's turn end only; keeps every hold
    out = by_previous_word(pts, pred, share)
    assert sum(c["holds"] + c["switches"] for c in out.values()) == len(pts)
    assert out["content_word"] == {"holds": 0, "holds_kept": 0, "switches": 2, "switches_found": 1,
                                   "hold_share_in_lines": 0.0}
    assert all(c["holds_kept"] == c["holds"] for c in out.values())
    report = score([(p, " S2:" if y else " yes", 0.5) for p, y in zip(pts, pred, strict=True)], lines=1)
    assert report["after_pause_by_previous_word"]["content_word"]["switches_found"] == 1
    assert "hold_share_in_lines" not in report["after_pause_by_previous_word"]["filler"]
