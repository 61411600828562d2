"""gan.study.stats: bootstrap intervals, rank tests and Holm's adjustment against direct computations."""

import itertools
import math

import numpy as np
import pytest

from gan.study.stats import bootstrap_interval, holm_adjusted, overlaps, rank_test
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
