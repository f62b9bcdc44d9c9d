"""The one percentile every report uses, so "p90" means the same statistic everywhere.

Definition: linear interpolation between the two closest ranks — the value at position
``q * (n - 1)`` of the sorted values, interpolated (Hyndman & Fan type 7: numpy's default
``method="linear"``, ``statistics.quantiles(method="inclusive")``). It is defined for any number
of values, needs no rounding of the rank, and agrees with what numpy, pandas and spreadsheets
report by default. Nearest-rank percentiles (used by some reports before) can differ from it by
up to one gap between neighbouring values.

Also the bootstrap interval every eval reports (``bootstrap``: whole units — lines, dialogues —
resampled with a seeded ``random.Random``, the ends read with ``percentile``; ``rtchat eval
switch`` read them by nearest rank before, up to one gap between neighbouring resampled values
away) and Welch's t-test (``welch_p``, what ``rtchat eval pred`` compares pause distributions
with), written out because scipy is not a dependency.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence

BOOTSTRAP_RESAMPLES = 1000


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


def bootstrap(units: Sequence[Sequence[float]], stat: Callable[[list[float]], float], seed: int = 0,
              resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95 % interval [2.5th, 97.5th percentile] of ``stat`` over ``resamples`` resamples of the
    units drawn with replacement; ``stat`` gets the column sums of a resample (each unit is a vector
    of counts or sums, e.g. a line's [tp, fp, fn]), so whatever one unit holds moves together.
    The same units, stat and seed give the same interval."""
    if not units:
        raise ValueError("bootstrap: no units to resample")
    rng = random.Random(seed)
    n, width = len(units), len(units[0])
    values = []
    for _ in range(resamples):
        total = [0] * width
        for _ in range(n):
            for k, c in enumerate(units[rng.randrange(n)]):
                total[k] += c
        values.append(stat(total))
    return [percentile(values, 0.025, ndigits=None), percentile(values, 0.975, ndigits=None)]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Numerical Recipes)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def welch_p(x: list[float], y: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (scipy's ``ttest_ind(equal_var=False)``); NaN when a
    sample has fewer than 2 values or both have no variance."""
    if len(x) < 2 or len(y) < 2:
        return math.nan
    mx, my = sum(x) / len(x), sum(y) / len(y)
    vx = sum((v - mx) ** 2 for v in x) / (len(x) - 1) / len(x)
    vy = sum((v - my) ** 2 for v in y) / (len(y) - 1) / len(y)
    if vx + vy == 0:
        return math.nan if mx == my else 0.0
    t = (mx - my) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return betainc(df / 2, 0.5, df / (df + t * t))
