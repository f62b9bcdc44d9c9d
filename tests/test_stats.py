"""The one percentile of every report (common/stats.py): numpy's default linear interpolation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtchat.common.stats import betainc, percentile, welch_p


@given(st.lists(st.integers(-10**9, 10**9), min_size=1, max_size=50), st.floats(0, 1))
def test_percentile_is_numpys_linear_interpolation(values, q):
    assert percentile(values, q, ndigits=None) == pytest.approx(float(np.percentile(values, q * 100)), rel=1e-9, abs=1e-6)


def test_percentile_scales_and_rounds_for_reports():
    values_ns = list(range(1_000, 101_000, 1_000))  # 1..100 µs
    assert percentile(values_ns, 0.5, scale=1e-3) == 50.5  # between the 50th and 51st value
    assert percentile(values_ns, 0.99, scale=1e-3) == 99.0
    assert percentile([7_000], 0.99, scale=1e-3) == 7.0
    assert percentile([3_000_000, 1_000_000, 2_000_000], 0.5, scale=1e-6) == 2.0


def test_no_values_have_no_percentile_and_q_outside_0_1_is_refused():
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        percentile([1.0], 90)


def test_welch_p_value_by_hand():
    # variances 2 and 2, n = 2: t = (1 - 2) / sqrt(2/2 + 2/2) = -1/sqrt(2), df = 2,
    # and for df = 2 the two-sided p = 1 - |t| / sqrt(t^2 + 2)
    t = 1 / math.sqrt(2)
    assert welch_p([0, 2], [1, 3]) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert betainc(3, 0.5, 6 / (6 + 2.446912**2)) == pytest.approx(0.05, abs=1e-6)  # t table, df 6
    assert welch_p([1.0, 1.0], [1.0, 1.0]) != welch_p([1.0, 1.0], [1.0, 1.0])  # NaN
    assert math.isnan(welch_p([1.0], [1.0, 2.0]))


def test_bootstrap_resamples_whole_units_and_is_deterministic_for_a_seed():
    from rtchat.common.stats import bootstrap

    def share(c):
        return c[1] / c[0]

    assert bootstrap([(2, 1)] * 10, share) == [0.5, 0.5]  # every unit alike: no spread
    rng = random.Random(0)
    units = [(n := rng.randint(1, 4), rng.randint(0, n)) for _ in range(30)]
    lo, hi = bootstrap(units, share, seed=3)
    pooled = share([sum(c) for c in zip(*units, strict=True)])
    assert 0.0 <= lo < pooled < hi <= 1.0
    assert bootstrap(units, share, seed=3) == [lo, hi]  # the same seed, the same interval
    assert bootstrap(units, share, seed=4) != [lo, hi]
    with pytest.raises(ValueError, match="no units"):
        bootstrap([], share)
