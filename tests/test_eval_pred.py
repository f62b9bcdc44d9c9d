"""rtchat eval pred / all (the reference's table 5, and the CSVs of tables 4 and 5): the labeller on
the spec's examples, every metric against hand-computed values, the quirks on and off, the
decoding methods, and runs on a tiny random Llama through the CLI."""

from __future__ import annotations

import csv
import json
import math

import pytest
from tiny_models import PREFIX, tiny_llama, tiny_llama_dir

from rtchat.common.stats import welch_p
from rtchat.evals import compat, pred
from rtchat.evals.pred import CLASSES, labels

CTX = PREFIX + " S1: and then we went"

# ---------------------------------------------------------------- the labeller (spec §5.2)


def test_labeller_on_the_specs_examples():
    assert labels(CTX, "S2: mhm. S1: and then") == (1, -1, -1, -1, 0, 1, 0)
    assert labels(CTX, "(1.2) and then")[1:4] == (1, 0, 1)
    assert labels(CTX, "(0.4) and then")[1:4] == (1, 1, 0)
    assert labels(CTX, "S1: and then")[0] == -1
    assert labels(CTX, "[% laughs] okay")[6] == 1


@pytest.mark.parametrize(("s", "cls", "want"), [
    ("um, so", "filler", 1), ("uh the", "filler", 1), ("erm.", "filler", 1), ("hmm", "filler", 1),
    ("er the", "filler", 0), ("so, I", "filler", 1), ("so I", "filler", 0), ("you know, it", "filler", 1),
    ("like.. yes", "filler", 1), ("umbrella", "filler", 0),
    ("haha", "laughter", 1), ("ha ha", "laughter", 1), ("hah", "laughter", 0), ("hehe", "laughter", 1),
    ("&=laughs", "laughter", 1), ("[% giggles]", "laughter", 1), ("[% giggling]", "laughter", 0),
    ("hoho", "laughter", 1), ("hello", "laughter", 0),
    ("S2: yeah. S1: so", "backchannel", 1), ("S2: all right. S1: so", "backchannel", 0),
    ("S2: right. S1: so", "backchannel", 1), ("S2: nah. S1: so", "backchannel", 0),
    ("S2: uh-huh S1: so", "backchannel", 0), ("S2: uhhuh S1: so", "backchannel", 1),
    ("S2: I see now S2: so", "backchannel", 0),  # the floor does not pass back
    ("S2: the big blue car S1: so", "backchannel", 0),  # 4 words
])
def test_labeller_classes(s, cls, want):
    assert labels(CTX, s)[CLASSES.index(cls)] == want, s


def test_pause_is_unknown_at_turn_boundaries_and_a_real_pause_still_counts():
    assert pred.pause(CTX, "S2: hi") == -1  # end of turn
    assert pred.pause(PREFIX + " S1:", "well then") == -1  # start of turn
    assert pred.pause(PREFIX + " S1:", "(0.5) well") == 1
    assert pred.pause(CTX, "well then") == 0
    assert pred.pause_short(CTX, "(.) well") == 0 and pred.pause_long(CTX, "(.) well") == 0  # no duration


def test_examples_split_protects_comments_and_masks_unannotated_classes():
    line = PREFIX + " S1: hello [% laughs] there (0.5) S2: hi"
    ex = pred.pred_examples(line, 3)
    words = ["S1:", "hello", "[% laughs]", "there", "(0.5)", "S2:", "hi"]
    assert [e.position for e in ex] == list(range(1, len(words)))
    assert ex[1].context == PREFIX + " S1: hello" and ex[0].line == 3
    by_class = {c: [e.target[i] for e in ex] for i, c in enumerate(CLASSES)}
    assert by_class["laughter"] == [0, 1, 0, 0, 0, 0]
    assert by_class["filler"] == [-1] * 6 and by_class["backchannel"] == [-1] * 6  # none in the line
    assert by_class["trp"] == [0, 0, 0, 0, 1, 0]
    resp = pred.response_examples(line, 0)
    assert [r.context for r in resp] == [PREFIX + " S1:", PREFIX + " S1: hello [% laughs] there (0.5) S2:"]


def test_sample_positions_is_seeded_per_line_and_keeps_order():
    items = list(range(50))
    a = pred.sample_positions(items, 5, 42, 3, "pred")
    assert a == sorted(a) and len(a) == 5 and a == pred.sample_positions(items, 5, 42, 3, "pred")
    assert a != pred.sample_positions(items, 5, 42, 4, "pred")
    assert pred.sample_positions(items, 0, 42, 3, "pred") == items


# ---------------------------------------------------------------- metrics against hand computation


def test_prf_matches_sklearn_binary_with_zero_division_0():
    # tp = 2, fp = 1, fn = 1 -> P = R = 2/3, F1 = 2/3
    assert pred.prf([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert pred.prf([0, 0], [0, 0]) == (0.0, 0.0, 0.0)  # undefined -> 0
    assert pred.prf([1, 0], [0, 0]) == (0.0, 0.0, 0.0)
    assert pred.prf([1, 0, 0], [1, 1, 1]) == pytest.approx((1 / 3, 1.0, 0.5))


def test_pred_scores_exclude_unknown_targets_and_count_predicted_unknown_as_0():
    ex = [pred.PredExample(0, 1, CTX, (1, -1, -1, -1, 0, 0, 0)),
          pred.PredExample(0, 2, CTX, (0, 0, 0, 0, 0, 0, 0)),
          pred.PredExample(0, 3, CTX, (-1, 1, 1, 0, 0, 0, 0))]
    scores = pred.pred_scores(ex, ["S2: hi", "S2: no", "S1: (0.3)"])
    assert scores["pred_trp_prec"] == 0.5 and scores["pred_trp_rec"] == 1.0  # the -1 target is left out
    assert scores["pred_pause_rec"] == 0.0 and scores["pred_pause_prec"] == 0.0  # predicted -1 -> 0


def test_diversity_by_hand_and_the_off_by_one_quirk():
    # "a b c d": fixed 3 bigrams, 2 trigrams, 1 4-gram, all distinct -> 1
    assert compat.diversity(["a b c d"], compat=False) == 1.0
    # "a a a a a": bigrams aa x4 (fixed; U=1), trigrams x3 (U=1), 4-grams x2 (U=1)
    assert compat.diversity(["a a a a a"], compat=False) == pytest.approx((1 / 4) * (1 / 3) * (1 / 2))
    # quirk: the last n-gram is skipped -> 3, 2, 1 n-grams, rep rounded to 2 decimals
    assert compat.diversity(["a a a a a"], compat=True) == pytest.approx((1 - 0.6667) * (1 - 0.5) * 1.0)
    assert math.isnan(compat.diversity(["a b"], compat=True))  # no 2-gram counted at all


def test_generic_replies_and_the_so_quirk():
    assert compat.is_generic("Well I really do not know", compat=False)
    assert compat.is_generic("Well I really do not know", compat=True)
    assert compat.is_generic("I'm so sorry", compat=False) and not compat.is_generic("I'm so sorry", compat=True)
    assert compat.is_generic("I don't think so", compat=False) and not compat.is_generic("I don't think so", compat=True)
    assert compat.normalise_generic("also", compat=True) == "al" and compat.normalise_generic("also", compat=False) == "also"


def test_response_scores_by_hand():
    lines = [PREFIX + " S1: a (0.2) b (0.4) S2: c"]  # real pauses 0.2, 0.4
    responses = [" yes (0.2) yes (0.4)", "I don't know", " (0.5) "]
    fixed = pred.response_scores(lines, responses, is_compat=False)
    p = welch_p([0.2, 0.4], [0.2, 0.4, 0.5])
    assert fixed["response_pause_dist_similarity"] == pytest.approx(p)
    assert pred.response_scores(lines, responses, is_compat=True)["response_pause_dist_similarity"] == pytest.approx(1 - p)
    assert fixed["response_specific"] == 0.5  # the pause-only response is dropped; 1 of 2 generic
    # texts "yes yes" and "I don't know": bigrams 1 + 2 distinct of 3, trigrams 1/1, 4-grams none -> NaN
    assert math.isnan(fixed["response_diversity"])


def test_aggregates_harmonic_mean():
    row = {f"pred_{c}_f1": 0.5 for c in CLASSES} | {"response_pause_dist_similarity": 0.2, "response_diversity": 0.4,
                                                   "response_specific": 0.9}
    agg = pred.aggregate(row)
    assert agg["avg_non_verbal"] == 0.5 and agg["avg_verbal"] == pytest.approx(0.5)
    assert agg["overall"] == pytest.approx(0.5)
    row["pred_trp_f1"] = 0.5 + 7 * 0.5  # mean 1.0
    assert pred.aggregate(row)["overall"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert pred.hmean(0.0, 0.7) == 0.0 and math.isnan(pred.hmean(math.nan, 0.7))


def test_post_processing_quirks():
    assert compat.clean_prediction(" things</s>", "</s>", compat=True) == "thing"
    assert compat.clean_prediction(" things ", "</s>", compat=False) == "things"
    assert compat.clean_response(" it is SS S", compat=True) == " it is"
    assert compat.clean_response(" it is SS ", compat=False) == "it is SS"


# ---------------------------------------------------------------- decoding with the agent's loop


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add overhead (and a lot on a busy machine)
    yield
    torch.set_num_threads(before)


def test_every_method_generates_deterministically_and_compat_top_k_differs(bpe_tok, one_thread):
    import torch

    from rtchat.configs.schema import AgentConfig
    from rtchat.nodes.agent.lm import AgentLM

    bpe_tok.pad_token = bpe_tok.eos_token
    lm = AgentLM(tiny_llama(len(bpe_tok)), bpe_tok, AgentConfig(seed=1))
    contexts = [CTX, CTX + " there", PREFIX + " S1: hello"]
    a = pred.generate_line(lm, list(compat.METHODS), contexts, contexts[:1], seed=3, is_compat=False)
    b = pred.generate_line(lm, list(compat.METHODS), contexts[::-1], contexts[:1], seed=3, is_compat=False)
    for m in compat.METHODS:
        assert a[m][0] == b[m][0][::-1]  # each context's output depends only on it, not the order
        assert all(isinstance(t, str) for t in a[m][0] + a[m][1])
    logits = torch.linspace(0, 1, 100)
    kept = []
    spy = type("Spy", (), {"choose": lambda self, r, lg, g: kept.append(lg) or (0, False)})()
    compat.TopK(50, spy).choose(None, logits, None)
    assert int(torch.isfinite(kept[0]).sum()) == 50
    assert isinstance(compat.strategy("nucleus", True), compat.TopK) and not isinstance(compat.strategy("nucleus", False),
                                                                                       compat.TopK)


def test_cache_reuse_across_contexts_gives_what_a_fresh_model_gives(bpe_tok, one_thread):
    import dataclasses

    from rtchat.configs.schema import AgentConfig
    from rtchat.nodes.agent.lm import AgentLM

    bpe_tok.pad_token = bpe_tok.eos_token
    model = tiny_llama(len(bpe_tok))
    contexts = [PREFIX + " S1: hello", CTX, CTX + " there (0.4)"]
    got = pred.generate_line(AgentLM(model, bpe_tok, AgentConfig(seed=1)), ["greedy", "contrastive"], contexts, [],
                             seed=7, is_compat=False)
    for method, cfg in (("greedy", AgentConfig(seed=7, decoding="greedy")),
                        ("contrastive", AgentConfig(seed=7, decoding="contrastive", top_k=8, min_penalty_alpha=0.6))):
        for k, context in enumerate(contexts):
            fresh = AgentLM(model, bpe_tok, dataclasses.replace(cfg))  # a new cache for every context
            fresh.eos_ids = frozenset({bpe_tok.eos_token_id})
            assert got[method][0][k] == fresh.generate(context, pred.PRED_NEW_TOKENS).text.strip(), (method, k)


def test_batched_decoding_gives_the_sequential_words(bpe_tok, one_thread):
    from rtchat.configs.schema import AgentConfig
    from rtchat.nodes.agent.lm import AgentLM

    bpe_tok.pad_token = bpe_tok.eos_token
    lm = AgentLM(tiny_llama(len(bpe_tok)), bpe_tok, AgentConfig(seed=1))
    contexts = [PREFIX + " S1: hello", CTX, CTX + " there (0.4) S2: fine thanks what about", PREFIX + " S1: sure"]
    methods = list(compat.METHODS)
    one = pred.generate_line(lm, methods, contexts, contexts[:2], seed=5, is_compat=False)
    for batch in (2, 8):
        assert pred.generate_line(lm, methods, contexts, contexts[:2], seed=5, is_compat=False, batch=batch) == one


# ---------------------------------------------------------------- the CLI


LINES = [
    PREFIX + " S1: how was it (0.3) the trip I mean. (0.8) S2: great (0.4) really great S1: good one um, yes",
    PREFIX + " S1: hello there (0.5) how are you S2: yeah. S1: fine thanks (0.2) and you (1.1) S2: fine haha",
    PREFIX + " S1: what about the weather S2: it is nice (0.3) sure",
]


def _run_all(tmp_path, model_dir, data, *extra):
    from rtchat.cli import main as cli

    out = tmp_path / "out"
    rc = cli(["eval", "all", "--model", str(model_dir), "--data", str(data), "--num-examples", "3", "--positions", "3",
              "--responses", "1", "--decoding", "greedy", "dynamic_contrastive_sampling", "--workers", "1", "--out-dir", str(out),
              *extra])
    return rc, out


@pytest.mark.slow
def test_eval_all_writes_the_references_files_and_columns(tmp_path, bpe_tok):
    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    rc, out = _run_all(tmp_path, model_dir, data)
    assert rc == 0
    with open(out / "evals_output_ppl_all.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ppl_trp_pos", "ppl_trp_neg", "ppl_pause_pos", "ppl_pause_neg"] and len(rows) == 2
    assert all(float(v) > 1 for v in rows[1])
    with open(out / "evals_output_pred_all_multiple.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["", *pred.COLUMNS]
    assert [r[0] for r in rows[1:]] == ["greedy", "dynamic_contrastive_sampling"]
    report = json.loads((out / "evals_output_all.json").read_text())
    assert report["lines"] == 3 and report["pred_counts"]["positions"] == 9 and report["pred_counts"]["responses"] == 3
    assert report["ppl_counts"]["trp_pos"] == 2 + 3 + 1
    assert report["config"]["reference_compat"] is False and len(report["data_sha256"]) == 64


def test_eval_all_refuses_an_empty_file_and_handles_one_speaker_lines(tmp_path, bpe_tok, capsys):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    empty = tmp_path / "e.txt"
    empty.write_text("\n", encoding="utf-8")
    assert cli(["eval", "all", "--model", str(model_dir), "--data", str(empty), "--out-dir", str(tmp_path / "o")]) == 1
    assert "rtchat eval all:" in capsys.readouterr().out and not (tmp_path / "o").exists()
    one = tmp_path / "one.txt"
    one.write_text(PREFIX + " S1: hello there (0.4) how are you\n", encoding="utf-8")
    rc, out = _run_all(tmp_path, model_dir, one)
    assert rc == 0
    with open(out / "evals_output_ppl_all.csv") as f:
        row = list(csv.DictReader(f))[0]
    assert row["ppl_trp_pos"] == "" and row["ppl_trp_neg"] == ""  # one speaker: no turn-switch examples (NaN)
    assert float(row["ppl_pause_pos"]) > 1
    with open(out / "evals_output_pred_all_multiple.csv") as f:
        row = list(csv.DictReader(f))[0]
    assert row["pred_trp_f1"] == "0.0"  # every trp target masked (no switch in the line): undefined -> 0


def test_a_model_that_never_writes_a_speaker_tag_scores_0_and_nan_not_an_error():
    ex = [pred.PredExample(0, 1, CTX, (1, -1, -1, -1, 0, 0, 0)), pred.PredExample(0, 2, CTX, (0, 0, 0, 0, 0, 0, 0))]
    scores = pred.pred_scores(ex, ["and then we", "and so on"])
    assert (scores["pred_trp_prec"], scores["pred_trp_rec"], scores["pred_trp_f1"]) == (0.0, 0.0, 0.0)
    resp = pred.response_scores([PREFIX + " S1: a (0.2) b (0.4) S2: c"], ["and then we went on and on"], is_compat=False)
    assert math.isnan(resp["response_pause_dist_similarity"])  # no predicted pause: Welch's test is undefined
    row = scores | resp
    agg = pred.aggregate(row)
    assert agg["avg_non_verbal"] == 0.0 and math.isnan(agg["avg_verbal"]) and math.isnan(agg["overall"])
