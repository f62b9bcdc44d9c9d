"""The one percentile every report uses, so "p90" means the same statistic everywhere.

Definition: linear interpolation between the two closest ranks — the value at position
``q * (n - 1)`` of the sorted values, interpolated (Hyndman & Fan type 7: numpy's default
``method="linear"``, ``statistics.quantiles(method="inclusive")``). It is defined for any number
of values, needs no rounding of the rank, and agrees with what numpy, pandas and spreadsheets
report by default. Nearest-rank percentiles (used by some reports before) can differ from it by
up to one gap between neighbouring values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float, *, scale: float = 1.0, ndigits: int | None = 1) -> float | None:
    """The ``q``-quantile (0 ≤ q ≤ 1) of ``values`` times ``scale`` (e.g. 1e-6 for ns → ms),
    rounded to ``ndigits`` (None: not rounded); None for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile: q must be in [0, 1], got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    value = (ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)) * scale
    return value if ndigits is None else round(value, ndigits)
