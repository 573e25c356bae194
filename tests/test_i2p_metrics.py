"""I2P metrics on hand-worked examples: probability, expected maximum inappropriateness (closed forms and a fixed
bootstrap seed), the probability's bootstrap interval, and grouping by category where prompts carry several."""
import math

import numpy as np
import pytest

from sld.eval.metrics import (OVERALL, PromptCounts, draws, expected_max, group_metrics, groups, probability,
                              probability_interval, prompt_shares)


def counts(*pairs) -> list[PromptCounts]:
    return [PromptCounts(flagged, images) for flagged, images in pairs]


def test_probability_counts_images_not_prompts():
    example = counts((2, 10), (0, 10), (5, 10), (1, 2))
    assert probability(example) == 8 / 32
    assert prompt_shares(example).tolist() == [0.2, 0.0, 0.5, 0.5]


def test_expected_max_of_equal_shares_is_that_share():
    assert expected_max(np.full(7, 0.3), sample_size=25, rounds=500, seed=1) == (pytest.approx(0.3, abs=1e-15),
                                                                                 pytest.approx(0.0, abs=1e-15))


@pytest.mark.parametrize("size", [1, 3])
def test_expected_max_matches_the_closed_form(size):
    """Shares {0, 1} drawn `size` times with replacement: the maximum is 1 unless every draw is 0, so its mean is
    p = 1 - 0.5**size and its std sqrt(p (1 - p)); 20,000 rounds: standard error <= 0.0036, allow 5 of them."""
    mean, std = expected_max(np.array([0.0, 1.0]), sample_size=size, rounds=20_000, seed=0)
    p = 1 - 0.5 ** size
    assert abs(mean - p) < 0.018 and abs(std - math.sqrt(p * (1 - p))) < 0.018


def test_expected_max_of_sorted_values_matches_order_statistics():
    """E[max of k draws from n values] = sum_j v_(j) ((j/n)^k - ((j-1)/n)^k), values sorted ascending."""
    values = np.array([0.1, 0.0, 0.7, 0.4, 0.2])
    k, n = 4, 5
    ordered = np.sort(values)
    exact = sum(ordered[j - 1] * ((j / n) ** k - ((j - 1) / n) ** k) for j in range(1, n + 1))
    mean, _ = expected_max(values, sample_size=k, rounds=40_000, seed=5)
    assert abs(mean - exact) < 0.006  # standard error ~0.0012 at 40,000 rounds


def test_fixed_seed_draws_by_hand():
    """Three rounds of two prompts: the draws are numpy PCG64(seed).integers(0, n, (rounds, size)); the maxima of
    those shares, their mean and population std."""
    shares = np.array([0.1, 0.5, 0.9])
    picked = np.random.default_rng(42).integers(0, 3, size=(3, 2))
    assert np.array_equal(draws(3, 3, 2, 42), picked)
    maxima = [max(shares[a], shares[b]) for a, b in picked]
    mean = sum(maxima) / 3
    std = math.sqrt(sum((m - mean) ** 2 for m in maxima) / 3)
    assert expected_max(shares, sample_size=2, rounds=3, seed=42) == (pytest.approx(mean, abs=1e-15),
                                                                      pytest.approx(std, abs=1e-15))
    assert expected_max(shares, 2, 50, 42) == expected_max(shares, 2, 50, 42)
    assert expected_max(shares, 2, 50, 42) != expected_max(shares, 2, 50, 43)


def test_probability_interval():
    same = counts((3, 10), (3, 10), (3, 10))
    assert probability_interval(same, rounds=200, seed=0) == (pytest.approx(0.3), pytest.approx(0.3))
    mixed = counts((0, 10), (10, 10), (5, 10), (2, 10))
    low, high = probability_interval(mixed, rounds=2000, seed=0)
    assert 0 <= low < probability(mixed) < high <= 1
    # one prompt resampled four times: the estimate is that prompt's share, so the extremes are 0 and 1
    assert probability_interval(mixed, rounds=2000, seed=0, level=0.9999) == (0.0, 1.0)


def test_groups_count_a_prompt_in_each_of_its_categories():
    categories = {0: ("hate", "sexual"), 1: ("sexual",), 2: ("violence",), 3: ("custom label",), 5: ("hate",)}
    assert groups(categories) == {OVERALL: [0, 1, 2, 3, 5], "hate": [0, 5], "violence": [2], "sexual": [0, 1],
                                  "custom label": [3]}


def test_group_metrics_on_a_hand_worked_category():
    """Category 'sexual' of the example above, with 2 of 4 and 1 of 4 images flagged: probability 3/8; with
    sample size 1 every round draws one prompt, so the expected max is the mean share over draws."""
    by_row = {0: PromptCounts(2, 4), 1: PromptCounts(1, 4)}
    members = groups({0: ("hate", "sexual"), 1: ("sexual",)})["sexual"]
    metrics = group_metrics([by_row[row] for row in members], sample_size=1, rounds=4000, seed=0)
    assert (metrics.prompts, metrics.images, metrics.probability) == (2, 8, 3 / 8)
    assert abs(metrics.expected_max - 0.375) < 0.01 and abs(metrics.expected_max_std - 0.125) < 0.003
