"""How sure a sweep's ranking is, over seeds: bootstrap intervals of a configuration's mean and a rank test
between two configurations (SciPy's implementations; SciPy is a dependency for these two), and Holm's adjustment
of the p-values when the best is tested against every other configuration; a Kruskal-Wallis test of a factor's
levels (pooled over the other factors) for the main effects a grid is run to find.

With the 2 to 5 seeds a study can afford, an interval is wide and a test weak: a Mann-Whitney U test of 3 seeds
against 3 cannot reach p < 0.1. The report says so rather than rank neighbours it cannot tell apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 9999
MIN_SEEDS = 3  # below this, a configuration's interval and test are flagged in the report


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def bootstrap_interval(values: Sequence[float | None], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (non-finite ones left out); (nan, nan) for fewer
    than two values, (v, v) when they are all equal. Seeded: the same values give the same interval."""
    from scipy.stats import bootstrap

    finite = _finite(values)
    if len(finite) < 2:
        return math.nan, math.nan
    if max(finite) == min(finite):
        return finite[0], finite[0]
    result = bootstrap(
        (np.asarray(finite),),
        np.mean,
        confidence_level=level,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rank_test(a: Sequence[float | None], b: Sequence[float | None]) -> float:
    """Two-sided p-value of a Mann-Whitney U test between two configurations' values (exact for small samples
    without ties); nan when either has fewer than two values."""
    from scipy.stats import mannwhitneyu

    x, y = _finite(a), _finite(b)
    if len(x) < 2 or len(y) < 2:
        return math.nan
    return float(mannwhitneyu(x, y, alternative="two-sided", method="auto").pvalue)


def holm_adjusted(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order (nan stays nan and is not counted): a study that
    tests the best configuration against each of m others makes m tests, and one of them comes out below 0.05 by
    chance far more often than 1 in 20. The i-th smallest of m p-values becomes max over j <= i of
    min(1, (m - j + 1) p_(j)); an adjusted p below alpha is a difference at family-wise level alpha."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def group_test(groups: Sequence[Sequence[float | None]]) -> float:
    """p-value of a Kruskal-Wallis H test that the groups' values come from one distribution (a factor's levels
    pooled over seeds and the other factors); nan for fewer than two groups of two values or all values equal."""
    from scipy.stats import kruskal

    finite = [_finite(g) for g in groups]
    finite = [g for g in finite if len(g) >= 2]
    if len(finite) < 2 or len({v for g in finite for v in g}) < 2:
        return math.nan
    return float(kruskal(*finite).pvalue)


def overlaps(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two intervals share a point (a nan bound: unknown, counted as overlapping)."""
    if any(math.isnan(v) for v in (*first, *second)):
        return True
    return first[0] <= second[1] and second[0] <= first[1]


def _paired_statistic(test, x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float, float, int]:
    """(``test``'s statistic, its two-sided p-value, pairs used) over the pairs where both values are finite; nan for
    fewer than 3 pairs or a constant side."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if _finite([a]) and _finite([b])]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return math.nan, math.nan, len(pairs)
    result = test([a for a, _ in pairs], [b for _, b in pairs])
    return float(result.statistic), float(result.pvalue), len(pairs)


def rank_correlation(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float, float, int]:
    """(Spearman's rho, its two-sided p-value, pairs used) over the pairs where both values are finite."""
    from scipy.stats import spearmanr

    return _paired_statistic(spearmanr, x, y)


def expected_best(values: Sequence[float], n: int) -> float:
    """The expected lowest of ``n`` of the ``values`` drawn at random without replacement: the expected best
    score after trying n of the k observed settings (Dodge et al. 2019's "expected validation performance"; their
    formula draws with replacement, which repeats draws and so understates how good the best of n distinct
    settings is, most for n near k; without replacement it is exact and unbiased: at
    n = k the best observed, at n = 1 the mean). Sorted ascending, v_(i) is the lowest of a random n-subset with
    probability C(k - i, n - 1) / C(k, n). ``inf`` marks a draw without a score (diverged): the expectation is inf
    when such draws can fill the whole subset."""
    ordered = sorted(float(v) for v in values)
    k = len(ordered)
    if not 1 <= n <= k:
        raise ValueError(f"n must be in 1..{k}, got {n}")
    total = 0.0
    for i, value in enumerate(ordered, start=1):
        if k - i < n - 1:  # too few larger values left for v_(i) to be a subset's lowest
            break
        if math.isinf(value):
            return math.inf
        total += math.comb(k - i, n - 1) / math.comb(k, n) * value
    return total


def expected_best_curve(values: Sequence[float]) -> list[float]:
    """``expected_best`` for n = 1..k."""
    return [expected_best(values, n) for n in range(1, len(values) + 1)]


def budget_band(
    values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> list[tuple[float, float]]:
    """Percentile bootstrap band of the expected-best curve, per n: the k scores resampled with replacement and
    the curve recomputed (a band of order statistics, so inf stays inf rather than becoming nan)."""
    rng = np.random.default_rng(seed)
    data = np.asarray([float(v) for v in values])
    curves = np.array([expected_best_curve(rng.choice(data, size=data.size, replace=True)) for _ in range(resamples)])
    tail = 100 * (1 - level) / 2
    low = np.percentile(curves, tail, axis=0, method="lower")
    high = np.percentile(curves, 100 - tail, axis=0, method="higher")
    return [(float(a), float(b)) for a, b in zip(low, high, strict=True)]


def proportion_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound at 0 or all successes, unlike the normal approximation);
    (nan, nan) without trials."""
    if trials == 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - level) / 2))
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def rank_agreement(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float, float, int]:
    """(Kendall's tau-b, its two-sided p-value, pairs used) over the pairs where both values are finite."""
    from scipy.stats import kendalltau

    return _paired_statistic(kendalltau, x, y)
