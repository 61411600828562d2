"""gan.study.stats: bootstrap intervals, rank tests, Holm's adjustment, the expected best of n draws, the Wilson
interval and Kendall's tau against direct computations."""

import itertools
import math

import numpy as np
import pytest

from gan.study.stats import (
    bootstrap_interval,
    budget_band,
    expected_best,
    expected_best_curve,
    holm_adjusted,
    overlaps,
    proportion_interval,
    rank_agreement,
    rank_test,
)
from tests.helpers import exact_u_p_value


def exact_bootstrap_percentiles(values, level=0.95):
    """The percentile interval of the mean over every equally likely resample (n^n of them)."""
    means = sorted(np.mean(s) for s in itertools.product(values, repeat=len(values)))
    tail = (1 - level) / 2
    return np.quantile(means, tail), np.quantile(means, 1 - tail)


@pytest.mark.parametrize("values", [[10.0, 12.0, 15.0, 30.0], [3.1, 3.5, 3.6, 4.0, 9.0]])
def test_bootstrap_interval_matches_the_exact_bootstrap_distribution(values):
    lo, hi = bootstrap_interval(values)
    exact_lo, exact_hi = exact_bootstrap_percentiles(values)
    spread = max(values) - min(values)
    assert lo == pytest.approx(exact_lo, abs=0.05 * spread) and hi == pytest.approx(exact_hi, abs=0.05 * spread)
    assert lo <= np.mean(values) <= hi
    assert bootstrap_interval(values) == (lo, hi)  # seeded


def test_bootstrap_interval_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_interval([5.0]))
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_interval([1.0, float("nan"), 3.0])[0] >= 1.0  # non-finite values are left out


@pytest.mark.parametrize(
    "a,b",
    [
        ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
        ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]),
        ([1.0, 5.0, 3.0], [2.0, 6.0, 4.0]),
    ],
)
def test_rank_test_is_the_exact_mann_whitney_p(a, b):
    assert rank_test(a, b) == pytest.approx(exact_u_p_value(a, b))


def test_three_seeds_against_three_cannot_be_told_apart_at_5_percent():
    assert rank_test([1.0, 2.0, 3.0], [100.0, 200.0, 300.0]) == pytest.approx(0.1)
    assert math.isnan(rank_test([1.0], [2.0, 3.0]))


def test_holm_adjusted_p_values_reject_what_the_step_down_procedure_rejects():
    assert holm_adjusted([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    assert holm_adjusted([0.3, 0.5, 0.6]) == pytest.approx([0.9, 1.0, 1.0])  # capped at 1, never decreasing
    rng = np.random.default_rng(0)
    for _ in range(50):
        pvalues = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 9))))
        adjusted, m = holm_adjusted(pvalues), len(pvalues)
        ordered = sorted(pvalues)
        for alpha in (0.01, 0.05, 0.1):
            # Holm's step-down: reject the i-th smallest while every p so far is below alpha / (m - j)
            steps = 0
            while steps < m and ordered[steps] <= alpha / (m - steps):
                steps += 1
            rejected = {p for p in ordered[:steps]}
            assert {p for p, q in zip(pvalues, adjusted, strict=True) if q <= alpha} == rejected


def test_overlaps():
    assert overlaps((1, 3), (2, 5)) and overlaps((1, 3), (3, 4)) and not overlaps((1, 2), (2.5, 4))
    assert overlaps((math.nan, math.nan), (1, 2))


@pytest.mark.parametrize(
    "values",
    [
        [31.0, 12.5, 80.2, 12.5, 44.0],  # a tie
        [5.0, math.inf, 7.5, 3.0, math.inf],  # two draws without a score
        [9.0],
        [2.0, 1.0, 3.0, 4.0, 6.0, 5.0],
    ],
)
def test_expected_best_equals_brute_force_over_every_ordering(values):
    """E[lowest of the first n of a random ordering of the k results], enumerated over all k! orderings."""
    orderings = list(itertools.permutations(values))
    for n in range(1, len(values) + 1):
        brute = [min(order[:n]) for order in orderings]
        expected = math.inf if any(math.isinf(b) for b in brute) else sum(brute) / len(brute)
        assert expected_best(values, n) == pytest.approx(expected, rel=1e-12), n
    curve = expected_best_curve(values)
    assert curve[-1] == min(values) and all(a >= b for a, b in zip(curve, curve[1:], strict=False))


def test_budget_band_holds_the_curve_and_keeps_inf():
    values = [31.0, 12.5, 80.2, 14.0, 44.0, 25.0, 60.0, 19.0]
    band, curve = budget_band(values), expected_best_curve(values)
    assert all(low <= c <= high for (low, high), c in zip(band, curve, strict=True))
    assert budget_band(values) == band  # seeded
    assert math.isinf(budget_band([1.0, math.inf, 2.0])[0][1])  # a resample of two infs keeps the upper bound inf


def test_wilson_interval_matches_known_values():
    assert proportion_interval(0, 8) == pytest.approx((0.0, 0.3244), abs=1e-4)
    assert proportion_interval(4, 8) == pytest.approx((0.2152, 0.7848), abs=1e-4)
    assert proportion_interval(8, 8) == pytest.approx((0.6756, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in proportion_interval(0, 0))


def test_kendall_tau_of_rankings():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40])[0] == pytest.approx(1.0)
    assert rank_agreement([1, 2, 3, 4], [40, 30, 20, 10])[0] == pytest.approx(-1.0)
    tau, p, n = rank_agreement([1, 2, 3, None, 5], [2, 1, 3, 4, math.inf])
    assert n == 3 and tau == pytest.approx(1 / 3) and 0 < p <= 1
