"""``rtchat bench agent --quick``: runs end to end on the embedded SmolLM2 and writes a complete JSON.

No timing thresholds (the machine running the tests may be busy): only the shape of the report.
"""

from __future__ import annotations

import argparse
import json
import numbers

import pytest

from rtchat.evals import bench, bench_agent

HEADLINE = ("cycle_p50_ms_cached_400", "cycle_p50_ms_full_400", "speedup_400", "decode_token_p50_ms", "decode_token_floor_ms",
            "speak_p50_ms_cached_400", "speak_p50_ms_cached_400_greedy", "decode_token_p50_ms_plain")


def test_transcripts_have_the_asked_words_and_cycles_add_words_then_grow_a_pause():
    for n in bench_agent.SIZES:
        text = bench_agent.transcript(n)
        assert text.startswith(bench_agent.PREFIX + " S1:")
        assert len(text[len(bench_agent.PREFIX) :].split()) == n
    texts = bench_agent.cycle_texts(bench_agent.transcript(50), 4)
    assert [t.split()[-1] for t in texts[2:4]] == ["(0.1)", "(0.2)"]
    assert len(texts[1].split()) == len(texts[0].split()) + 2 and texts[3].startswith(texts[1])


@pytest.mark.model
@pytest.mark.slow
def test_quick_bench_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "bench-agent.json"
    parser = argparse.ArgumentParser()
    bench.configure(parser)

    assert bench.run(parser.parse_args(["agent", "--json", str(out), "--quick"])) == 0

    result = json.loads(out.read_text())
    for key in HEADLINE:
        assert isinstance(result[key], numbers.Real) and result[key] > 0, key
    for n in bench_agent.SIZES:
        for path in ("cached", "full"):
            assert 0 < result[f"cycle_p50_ms_{path}_{n}"] <= result[f"cycle_p90_ms_{path}_{n}"]
            assert result[f"prefill_p50_ms_{path}_{n}"] >= 0
        assert result[f"tokens_run_per_cycle_cached_{n}"] < result[f"tokens_run_per_cycle_full_{n}"]  # the cache is reused
        assert isinstance(result[f"speedup_{n}"], float)
    for n in bench_agent.SIZES:
        assert 0 < result[f"speak_p50_ms_cached_{n}"] <= result[f"speak_p90_ms_cached_{n}"]
    for calls in ("cycle", "speak"):
        shares = result[f"share_{calls}_400"]
        assert set(shares) == {"prefill", "decode", "tokenize", "sampling_and_python"}
        assert sum(shares.values()) == pytest.approx(1, abs=0.01)
    assert result["share_cycle_400"]["decode"] == 0  # a listening decision generates nothing
    assert result["fast_path"] is True and result["fast_path_identical"] == "2/2"
    dtype = bench_agent.profile_agent().dtype
    assert result["dtype"] == dtype and set(result["by_dtype"]) == {dtype}
    assert set(result["met"]) == set(result["targets"]) == set(bench_agent.TARGETS)
    assert {"cycle", "speedup_N", "decode_token_floor_ms"} <= set(result["definitions"])
    assert {"cpu_count", "torch", "transformers", "torch_threads", "date"} <= set(result["machine"])
    assert result["memory_read_gb_s"] > 0 and not list(tmp_path.glob(".bench-agent.json.*"))
    assert "speedup" in capsys.readouterr().out
