"""rtchat eval ppl: the case selection rule on a hand-made line, and runs on a tiny random Llama
(directly and through the CLI)."""

from __future__ import annotations

import json
import math
import random

import pytest
from tiny_models import PREFIX, tiny_llama, tiny_llama_dir

from rtchat.datasets.lines import parse_line
from rtchat.evals.ppl import CATEGORIES, cases, evaluate, score

# tags S1 S2 S1 (two speaker changes), pauses (0.3) (0.8) (0.4)
LINE = PREFIX + " S1: how was it (0.3) the trip I mean. (0.8) S2: great (0.4) really great S1: good one"
LINES = [
    LINE,
    PREFIX + " S1: hello there (0.5) how are you S2: fine thanks (0.2) and you (1.1) S1: fine",
    PREFIX + " S1: what about the weather S2: it is nice (0.3) sure",
]


def test_cases_count_and_negatives_only_at_mid_clause_boundaries():
    parse_line(LINE)
    for seed in range(5):
        got = cases(LINE, random.Random(seed))
        by = {k: [c for c in got if c.category == k] for k in CATEGORIES}
        assert [c.target for c in by["trp_pos"]] == [" S2:", " S1:"]
        assert [c.target for c in by["pause_pos"]] == [" (0.3)", " (0.8)", " (0.4)"]
        assert by["trp_pos"][0].prefix.endswith("I mean. (0.8)")
        # boundaries: how|was, was|it, the|trip, trip|I, I|mean., really|great, good|one -> 7
        assert len(by["trp_neg"]) == 2 and len(by["pause_neg"]) == 3
        assert sorted(c.target for c in by["pause_neg"]) == [" (0.3)", " (0.4)", " (0.8)"]
        for c in by["trp_neg"] + by["pause_neg"]:
            rest = LINE[len(c.prefix):].split()
            prev = c.prefix.split()[-1]
            assert rest and not rest[0].startswith(("S1:", "S2:", "("))  # next real unit is a word
            assert not prev.endswith((":", ")", "."))  # previous unit is a non-final word
        # the other speaker's tag
        for c in by["trp_neg"]:
            speaker = [u for u in c.prefix.split("Transcript:")[1].split() if u.endswith(":")][-1]
            assert c.target.strip() != speaker


def test_tiny_model_gives_finite_perplexities(bpe_tok):
    bpe_tok.pad_token = bpe_tok.eos_token
    report = evaluate(tiny_llama(len(bpe_tok)), bpe_tok, LINES, num_examples=3, seed=0)
    for k in CATEGORIES:
        v = report[f"ppl_{k}"]
        assert math.isfinite(v) and v > 1.0, k
    c = report["counts"]
    assert c["lines"] == 3 and c["trp_pos"] == 5 and c["pause_pos"] == 7
    assert c["trp_neg"] == 2 + 2 + 1 and c["pause_neg"] == 3 + 3 + 1
    assert c["trp_pos_tokens"] == 3 * c["trp_pos"]  # " S2:" = ĠS 2 :
    json.dumps(report)


def test_each_case_scores_as_a_plain_forward_pass_over_its_prompt(bpe_tok):
    import torch

    torch.manual_seed(5)
    model = tiny_llama(len(bpe_tok)).eval()
    for line in LINES:
        line_cases = cases(line, random.Random(2))
        got = score(model, bpe_tok, line, line_cases, max_length=512)
        assert sorted(c.target + c.category + str(c.unit) for c, _, _ in got) == sorted(
            c.target + c.category + str(c.unit) for c in line_cases)
        for c, nll, n in got:
            prompt = bpe_tok(c.prefix)["input_ids"]
            target = bpe_tok(c.target, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + target])).logits[0].float(), -1)
            want = -sum(float(logp[len(prompt) - 1 + r, t]) for r, t in enumerate(target))
            assert n == len(target) and nll == pytest.approx(want, rel=1e-4), (c.category, c.target)


def test_cli_writes_json(tmp_path, bpe_tok):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    assert cli(["eval", "ppl", "--model", str(model_dir), "--data", str(data), "--num-examples", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {f"ppl_{k}" for k in CATEGORIES} | {"counts", "model", "seed", "data_sha256"} <= report.keys()
    assert report["seed"] == 0 and len(report["data_sha256"]) == 64 and report["counts"]["lines"] == 2


# ---------------------------------------------------------------- the reference's table 4 (spec §3, §4)


def test_reference_examples_on_a_hand_made_line():
    from rtchat.evals.ppl import reference_examples

    # words: S1: how was it (0.3) the trip I mean. (0.8) S2: great (0.4) really great S1: good one
    ex = reference_examples(LINE)
    by = {k: [(e.unit, e.target) for e in ex if e.category == k] for k in CATEGORIES}
    assert by["trp_pos"] == [(10, " S2:"), (15, " S1:")]
    # the other prefix speaker before every non-tag word once someone holds the floor
    assert by["trp_neg"] == [(i, " S2:") for i in range(1, 10)] + [(i, " S1:") for i in range(11, 15)] + [(16, " S2:"),
                                                                                                        (17, " S2:")]
    assert by["pause_pos"] == [(4, " (0.3)"), (9, " (0.8)"), (12, " (0.4)")]
    # not at a tag, not right after one (the turn's first word), not at a real pause
    neg_units = [2, 3, 5, 6, 7, 8, 13, 14, 17]
    assert by["pause_neg"] == [(i, p) for i in neg_units for p in (" (0.2)", " (0.5)", " (1.0)")]
    one_speaker = PREFIX + " S1: hello there how are you"
    assert reference_examples(one_speaker) == []  # one speaker, no pause: nothing to score


def test_reference_scores_are_the_mean_nll_from_the_marker_of_a_plain_forward_pass(bpe_tok):
    import torch

    from rtchat.evals.ppl import reference_examples, score_reference

    torch.manual_seed(5)
    model = tiny_llama(len(bpe_tok)).eval()
    got = score_reference(model, bpe_tok, LINE, max_length=512, batch=4)  # several branch batches
    head, _, body = LINE.partition("Transcript:")
    words = body.split()
    want = {k: [] for k in CATEGORIES}
    for e in reference_examples(LINE):
        prompt = bpe_tok(head + "Transcript:")["input_ids"]
        for w in words[: e.unit]:
            prompt += bpe_tok(" " + w, add_special_tokens=False)["input_ids"]
        target = bpe_tok(e.target, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + target])).logits[0].float(), -1)
        nll = [-float(logp[len(prompt) - 1 + r, t]) for r, t in enumerate(target)]
        want[e.category].append(sum(nll) / len(nll))  # the marker (" S" / " (") is the first token here
    for k in CATEGORIES:
        assert got[k] == pytest.approx(want[k], rel=1e-4), k


def test_reference_table_is_a_macro_mean():
    from rtchat.evals.ppl import reference_table

    row, counts = reference_table([{"trp_pos": [1.0, 3.0], "trp_neg": [], "pause_pos": [2.0], "pause_neg": [0.5]},
                                   {"trp_pos": [2.0], "trp_neg": [], "pause_pos": [], "pause_neg": [1.5]}])
    assert row["ppl_trp_pos"] == pytest.approx(math.exp(2.0)) and math.isnan(row["ppl_trp_neg"])
    assert row["ppl_pause_neg"] == pytest.approx(math.exp(1.0)) and counts == {"trp_pos": 3, "trp_neg": 0, "pause_pos": 1,
                                                                              "pause_neg": 2}


def test_cli_reference_style_writes_the_references_csv(tmp_path, bpe_tok):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    assert cli(["eval", "ppl", "--model", str(model_dir), "--data", str(data), "--num-examples", "3", "--json", str(out),
                "--reference", "--negatives", "4"]) == 0
    report = json.loads(out.read_text())
    assert report["counts"]["trp_pos"] == 2 + 2 + 1 and report["counts"]["trp_neg"] <= 3 * 4
    text = (tmp_path / "evals_output_ppl_multiple.csv").read_text().splitlines()
    assert text[0] == "ppl_trp_pos,ppl_trp_neg,ppl_pause_pos,ppl_pause_neg"
    assert [float(v) for v in text[1].split(",")] == pytest.approx([report[f"ppl_{k}"] for k in CATEGORIES])
