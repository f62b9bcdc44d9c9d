"""``rtchat bench tts --quick`` runs end to end on Piper and espeak and writes a complete JSON.

No timing thresholds (the machine running the tests may be busy): only the shape of the report.
"""

from __future__ import annotations

import argparse
import json
import numbers

import pytest

from rtchat.evals import bench, bench_tts


@pytest.mark.model
@pytest.mark.slow
def test_quick_bench_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "bench-tts.json"
    parser = argparse.ArgumentParser()
    bench.configure(parser)

    assert bench.run(parser.parse_args(["tts", "--json", str(out), "--quick", "tts.threads=2"])) == 0

    result = json.loads(out.read_text())
    for engine in bench_tts.ENGINES:
        r = result[engine]
        for key in ("tts_ttfa_ms", "tts_ttfa_p90_ms", "tts_rtf", "audio_s"):
            assert isinstance(r[key], numbers.Real) and r[key] > 0, (engine, key)
        assert r["tts_ttfa_ms"] <= r["tts_ttfa_p90_ms"]
        assert r["texts"] == bench_tts.QUICK_TEXTS and r["sample_rate"] == 22_050
        assert 1.0 * r["texts"] < r["audio_s"] < 6.0 * r["texts"]  # each text is 1-6 s of speech
    assert result["ttfa_ratio_piper_vs_espeak"] > 0
    assert set(result["met"]) == set(result["targets"]) == set(bench_tts.TARGETS)
    assert result["config"]["threads"] == 2 and result["config"]["quick"] is True
    assert {"cpu_count", "platform", "piper-tts", "onnxruntime", "date"} <= set(result["machine"])
    assert "tts_ttfa_ms" in result["definitions"]
    assert "ttfa_ratio_piper_vs_espeak" in capsys.readouterr().out
