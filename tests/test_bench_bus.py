"""``rtchat bench bus --quick``: runs end to end with real processes and writes a complete JSON.

No latency or rate thresholds here (the machine running the tests may be busy); only the shape
of the report and that the bus lost nothing.
"""

from __future__ import annotations

import argparse
import json
import numbers

import pytest

from rtchat.evals import bench, bench_bus

HEADLINE = ("zmq_p50_us", "zmq_p99_us", "zmq_max_rate_per_s", "zmq_lost", "mpq_p50_us", "mpq_p99_us", "mpq_max_rate_per_s")


def test_a_step_that_lost_lagged_or_fell_short_is_not_sustained():
    good = {"lost": 0, "bad": 0, "p99_us": 900.0, "achieved_per_s": 9_990}
    assert bench_bus.sustained(good, 10_000)
    assert not bench_bus.sustained({**good, "lost": 1}, 10_000)
    assert not bench_bus.sustained({**good, "p99_us": 25_000.0}, 10_000)
    assert not bench_bus.sustained({**good, "achieved_per_s": 9_000}, 10_000)


@pytest.mark.slow
def test_quick_bench_writes_complete_json_and_loses_nothing(tmp_path, capsys):
    out = tmp_path / "bench-bus.json"
    parser = argparse.ArgumentParser()
    bench.configure(parser)

    assert bench.run(parser.parse_args(["bus", "--json", str(out), "--quick"])) == 0

    result = json.loads(out.read_text())
    for key in HEADLINE:
        assert isinstance(result[key], numbers.Real) and result[key] >= 0, key
    assert result["zmq_lost"] == 0
    assert result["zmq_burst_lost"] == 0
    for t in ("zmq", "mpq"):
        for n in (1, 6):
            assert 0 < result[f"{t}_{n}sub_p50_us"] <= result[f"{t}_{n}sub_p99_us"]
            assert result[f"{t}_{n}sub_lost"] == 0
            for kind in ("audio", "text"):
                assert isinstance(result[f"{t}_{kind}_{n}sub_max_rate_per_s"], int)
    assert isinstance(result["p99_ratio_mpq_over_zmq"], float)
    assert {"p50_us/p99_us", "max_rate_per_s", "zmq_lost"} <= set(result["definitions"])
    assert {"cpu_count", "python", "pyzmq", "libzmq", "date"} <= set(result["machine"])
    assert result["runs"] and not list(tmp_path.glob(".bench-bus.json.*"))  # no temp file left behind
    assert "zmq" in capsys.readouterr().out
