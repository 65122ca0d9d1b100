"""The chance level of sharing: random subspaces of the same ranks, through the engine's own modes."""

import numpy as np
import pytest
import torch

from devec.engine import chance_pair_dim, chance_shared_dim, random_bases
from devec.engine.chance import _shared_dim


def test_small_ranks_in_many_rows_share_nothing_by_chance():
    for mode in ("joint", "pairwise", "iterative"):
        assert chance_shared_dim(512, (6, 8, 5), 0.85, mode, draws=4) == 0.0
        assert chance_shared_dim(10, (0, 0), 0.85, mode, draws=2) == 0.0  # an unchanged parameter: nothing kept


@pytest.mark.parametrize("mode", ["joint", "pairwise", "iterative"])
def test_forced_intersection_is_counted(mode):
    """Two subspaces of R^20 with ranks 14 and 12 meet in at least 6 dimensions, whatever the draw."""
    assert chance_shared_dim(20, (14, 12), 0.85, mode, draws=6) >= 14 + 12 - 20


def test_forced_intersection_of_every_draw_and_pair():
    us = random_bases(16, [10, 9, 11], np.random.default_rng(3))
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert _shared_dim([us[i], us[j]], 0.85, "pairwise", 0, "lowrank") >= us[i].shape[1] + us[j].shape[1] - 16


def test_chance_grows_with_the_kept_rank():
    levels = [chance_pair_dim(64, r, r, 0.85, draws=16) for r in (8, 16, 24, 32, 40)]
    assert all(a <= b for a, b in zip(levels, levels[1:], strict=False))
    assert levels[0] == 0.0 and levels[-1] >= 2 * 40 - 64


def test_pairwise_agrees_with_an_independent_numpy_monte_carlo():
    """Principal angles of numpy-drawn n-row bases (no reduction) against the engine's simulation."""
    n, r1, r2, tau, draws = 40, 14, 16, 0.6, 300
    rng = np.random.default_rng(123)
    counts = []
    for _ in range(draws):
        q1, _ = np.linalg.qr(rng.standard_normal((n, r1)))
        q2, _ = np.linalg.qr(rng.standard_normal((n, r2)))
        cos2 = np.linalg.svd(q1.T @ q2, compute_uv=False) ** 2
        counts.append(int((cos2 > tau).sum()))
    reference, spread = float(np.mean(counts)), float(np.std(counts))
    assert reference > 0.5  # the comparison is not between two zeros
    ours = chance_pair_dim(n, r1, r2, tau, draws=draws, seed=7)
    assert abs(ours - reference) < 4 * spread * np.sqrt(2 / draws)


def test_reduced_draws_keep_the_geometry_of_n_rows():
    """Below n = sum of ranks the bases live in the span of all of them; the level matches n-row draws above it."""
    reduced = random_bases(200, [5, 7], np.random.default_rng(0))
    assert [tuple(u.shape) for u in reduced] == [(12, 5), (12, 7)]
    for u in reduced:
        torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-12, rtol=0)
    full = random_bases(10, [5, 7], np.random.default_rng(0))
    assert [tuple(u.shape) for u in full] == [(10, 5), (10, 7)]


def test_iterative_with_one_other_is_the_pair_and_results_repeat():
    args = (30, (12, 14), 0.7)
    pair = chance_shared_dim(*args, "pairwise", draws=10, seed=4)
    assert chance_shared_dim(*args, "iterative", draws=10, seed=4, target=0) == pair
    assert chance_shared_dim(*args, "pairwise", draws=10, seed=4) == pair


def test_iterative_removes_no_more_than_the_target_holds():
    removed = chance_shared_dim(12, (6, 10, 10, 10), 0.85, "iterative", draws=5, target=0)
    assert 4 <= removed <= 6  # the first step alone must remove 6 + 10 - 12 = 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 10, "ranks": (4, 11), "mode": "pairwise"}, "every kept rank must lie in"),
    ({"n": 10, "ranks": (4,), "mode": "pairwise"}, "at least two"),
    ({"n": 10, "ranks": (4, 4), "mode": "mixed"}, "use one of"),
    ({"n": 10, "ranks": (4, 4), "mode": "joint", "draws": 0}, "draws=0"),
    ({"n": 10, "ranks": (4, 4), "mode": "iterative", "target": 2}, "target=2"),
])
def test_bad_arguments_are_named(kwargs, message):
    kwargs = {"tau": 0.85, "draws": 2, **kwargs}
    n, ranks, tau, mode = (kwargs.pop(k) for k in ("n", "ranks", "tau", "mode"))
    with pytest.raises(ValueError, match=message):
        chance_shared_dim(n, ranks, tau, mode, **kwargs)
