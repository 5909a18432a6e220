"""Channel permutations for N:M sparsity: a valid order that never keeps less, the planted optimum found, apex's
64x128 reference case reproduced, errors named, and the same result for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from onnxpress.irpasses.core.errors import DataError
from onnxpress.irpasses.sparsity import permutation
from onnxpress.irpasses.sparsity.permutation import (
    balanced_order,
    kept_importance,
    search_permutation,
    unstructured_bound,
)
from onnxpress.kernels.formats import magnitude_nm


def _planted(K: int, N: int, m: int, n: int, seed: int) -> np.ndarray:
    """Importance that one hidden order makes exactly n:m (n non-zeros in every group of m rows of every
    column), rows shuffled: the best permutation keeps everything."""
    rng = np.random.default_rng(seed)
    a = np.zeros((K, N))
    for g in range(K // m):
        for col in range(N):
            a[g * m + rng.choice(m, n, replace=False), col] = rng.uniform(0.5, 1.0, n)
    return a[rng.permutation(K)]


def _apex_case() -> np.ndarray:
    """apex permutation_test.py's default random matrix (--channels 64 --filters 128, seed 1), as [K, N]."""
    return np.random.RandomState(1).rand(128, 64).T  # the stream np.random.seed(1); np.random.rand(...) draws


def test_kept_importance_matches_the_magnitude_projection() -> None:
    w = np.random.default_rng(0).standard_normal((32, 24))
    for m, n in [(4, 2), (4, 1), (8, 4)]:
        expected = np.abs(magnitude_nm(w, m, n)).sum(dtype=np.float64)
        assert kept_importance(np.abs(w), m, n) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("K", "N", "m", "n"), [(64, 48, 4, 2), (48, 7, 4, 1), (32, 40, 8, 4), (24, 16, 4, 3), (8, 5, 4, 2)])
def test_order_is_a_permutation_and_never_keeps_less(K: int, N: int, m: int, n: int) -> None:
    importance = np.abs(np.random.default_rng(K + N).standard_normal((K, N))).astype(np.float32)
    result = search_permutation(importance, m, n, time_budget_s=None, max_rounds=5)
    assert sorted(result.order.tolist()) == list(range(K))
    assert result.kept_after >= result.kept_before
    assert result.kept_after == pytest.approx(kept_importance(importance[result.order], m, n))
    assert result.kept_before == pytest.approx(kept_importance(importance, m, n))
    assert result.kept_after <= result.bound * (1 + 1e-6) and result.bound <= result.total * (1 + 1e-6)
    assert 0.0 <= result.efficacy <= 1.0 + 1e-6 and result.pruned_reduction >= 0.0


def test_an_order_that_cannot_improve_comes_back_unchanged() -> None:
    importance = np.ones((16, 8))
    result = search_permutation(importance, time_budget_s=None, max_rounds=3)
    assert result.kept_after == result.kept_before == 64.0
    assert result.efficacy == 1.0  # no gap to unstructured pruning


@pytest.mark.parametrize(("K", "N", "m", "n"), [(32, 64, 4, 2), (32, 32, 8, 4)])
def test_finds_a_planted_perfect_permutation(K: int, N: int, m: int, n: int) -> None:
    importance = _planted(K, N, m, n, seed=1)
    result = search_permutation(importance, m, n, time_budget_s=None, max_rounds=30)
    assert result.kept_before < 0.93 * result.total
    assert result.bound == pytest.approx(result.total)
    assert result.kept_after == pytest.approx(result.total), "every group is n:m again in the order found"


def test_reproduces_apex_reference_case() -> None:
    """The baselines of apex's README table for its 64x128 case, and its 8-channel stripe-group result
    (35.5 %) from the pair descent alone."""
    importance = _apex_case()
    assert importance.sum() == pytest.approx(4083.169, abs=1e-3)
    assert kept_importance(importance, 4, 2) == pytest.approx(2852.377, abs=1e-3)
    assert unstructured_bound(importance, 4, 2) == pytest.approx(3042.332, abs=1e-3)
    descent = search_permutation(importance, time_budget_s=None, max_rounds=0)
    assert descent.rounds == 0 and descent.efficacy >= 0.35
    kicked = search_permutation(importance, time_budget_s=None, max_rounds=20)
    assert kicked.kept_after >= descent.kept_after


def test_same_seed_same_order() -> None:
    importance = _apex_case()
    first = search_permutation(importance, time_budget_s=None, max_rounds=15, seed=3)
    again = search_permutation(importance, time_budget_s=None, max_rounds=15, seed=3)
    np.testing.assert_array_equal(first.order, again.order)
    assert first.rounds == again.rounds == 15


def test_windows_of_groups_when_they_do_not_fit_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """More groups than a window: random-pairing sweeps, then windows of random groups take turns."""
    monkeypatch.setattr(permutation, "WINDOW_GROUPS", 6)
    monkeypatch.setattr(permutation, "WINDOW_KICKS", 3)
    importance = _planted(64, 32, 4, 2, seed=2)
    result = search_permutation(importance, time_budget_s=None, max_rounds=12, seed=0)
    assert sorted(result.order.tolist()) == list(range(64))
    assert result.rounds == 12
    assert result.efficacy > 0.5


def test_zero_budget_still_returns_a_valid_order() -> None:
    importance = _planted(64, 16, 4, 2, seed=3)
    result = search_permutation(importance, time_budget_s=0.0)
    assert sorted(result.order.tolist()) == list(range(64))
    assert result.kept_after >= result.kept_before and result.rounds == 0


def test_balanced_order_spreads_rank_tiers() -> None:
    importance = np.repeat(np.arange(16, dtype=float)[:, None], 3, axis=1)  # row k has importance k
    groups = np.arange(16)[balanced_order(importance, 4)].reshape(4, 4)
    assert sorted(np.sort(groups, axis=1)[:, -1].tolist()) == [12, 13, 14, 15]  # one top-tier channel per group


def test_k_not_a_multiple_of_m_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"K=10 input channels are not a multiple of m=4"):
        search_permutation(np.ones((10, 4)), 4, 2)
    with pytest.raises(DataError, match=r"not a multiple of m=8"):
        kept_importance(np.ones((12, 4)), 8, 4)


@pytest.mark.parametrize(("importance", "m", "n", "message"), [
    (-np.ones((8, 4)), 4, 2, "finite and >= 0"),
    (np.full((8, 4), np.nan), 4, 2, "finite and >= 0"),
    (np.ones((8, 4)), 4, 4, "not an N:M pattern"),
    (np.ones(8), 4, 2, "2-D"),
])
def test_bad_inputs_are_data_errors(importance: np.ndarray, m: int, n: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        search_permutation(importance, m, n)


def test_needs_a_budget_or_a_round_cap() -> None:
    with pytest.raises(DataError, match="time budget, max_rounds"):
        search_permutation(np.ones((8, 4)), time_budget_s=None)
