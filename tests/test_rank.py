"""Effective rank (RankMe) on matrices whose rank is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trackemb.embedding.rank import effective_rank


def test_equal_singular_values_give_full_rank() -> None:
    # Orthonormal rows: k equal singular values -> exp(log k) = k.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 64)))
    for k in (2, 4, 17, 64):
        assert effective_rank(q[:k]) == pytest.approx(k, rel=1e-6)


def test_rank_one_matrix() -> None:
    v = np.random.default_rng(1).normal(size=(1, 32))
    x = np.arange(1, 51)[:, None] * v  # 50 points on one line
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-4)


def test_two_unequal_directions_match_entropy() -> None:
    # Singular values 3 and 1 -> p = (0.75, 0.25) -> exp(H).
    x = np.zeros((2, 8))
    x[0, 0], x[1, 1] = 3.0, 1.0
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(x) == pytest.approx(math.exp(h), rel=1e-6)


def test_centering_removes_a_shared_offset() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 16)) + 50.0  # rank-3 cloud far from the origin
    assert effective_rank(x) < 1.5  # the offset dominates
    assert 2.0 < effective_rank(x, center=True) <= 3.0 + 1e-6


def test_degenerate_inputs_are_nan() -> None:
    assert math.isnan(effective_rank(np.zeros((5, 4))))
    assert math.isnan(effective_rank(np.ones((1, 4))))
