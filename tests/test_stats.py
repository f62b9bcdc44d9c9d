"""The one percentile of every report (common/stats.py): numpy's default linear interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtchat.common.stats import percentile


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
