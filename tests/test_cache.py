"""BasisCache: a drop-in for column_basis that computes each SVD once across a sweep and never trusts a bad entry."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from devec.cache import BasisCache
from devec.engine import LoRAFactors, column_basis
from devec.vectors import decompose_model

RULES = ["full", "energy:0.9", "energy:0.5", "epsilon:0.05", "ratio:0.5", "fixed:40"]


def _pool(k: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(48, 6, generator=g)
    out = []
    for _ in range(k):
        tv = {}
        for name, (n, m) in {"a.weight": (48, 32), "b.weight": (64, 48), "b.bias": (64, 1)}.items():
            w = torch.randn(n, m, generator=g) * 0.1
            if n == 48:
                w += shared @ torch.randn(6, m, generator=g)
            tv[name] = w.squeeze(1) if m == 1 else w
        out.append(tv)
    return out


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


@pytest.mark.parametrize("rule", RULES)
def test_cached_basis_equals_engine_basis_cold_and_warm(tmp_path, rule):
    w = torch.randn(64, 40, generator=torch.Generator().manual_seed(1))
    expected = column_basis(w, rule)
    cold = BasisCache(tmp_path).column_basis(w, rule)
    warm_cache = BasisCache(tmp_path)
    warm = warm_cache.column_basis(w, rule)
    for got in (cold, warm):
        assert torch.equal(got.U, expected.U)
        assert torch.equal(got.singular_values, expected.singular_values)
        assert got.total_energy == expected.total_energy
    assert warm_cache.stats() == {"hits": 1, "misses": 0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_deficient_input_keeps_the_engines_rank(tmp_path, dtype):
    """Directions at the input's rounding level are dropped exactly as the engine drops them (dtype-aware)."""
    g = torch.Generator().manual_seed(9)
    w = (torch.randn(60, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 40, generator=g, dtype=torch.float64))
    w = w.to(dtype)
    for rule in ("full", "epsilon:0", "energy:1.0"):
        expected = column_basis(w, rule)
        got = BasisCache(tmp_path).column_basis(w, rule)
        assert got.rank == expected.rank == 5 and torch.equal(got.U, expected.U)


def test_one_exact_svd_serves_every_rank_rule(tmp_path):
    w = torch.randn(50, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # the exact route
    cache = BasisCache(tmp_path)
    ranks = [cache.column_basis(w, rule).rank for rule in ["full", "energy:0.9", "energy:0.5", "epsilon:0.1"]]
    assert len(set(ranks)) > 1
    assert cache.stats() == {"hits": 3, "misses": 1}
    assert len(_entries(tmp_path)) == 1


def test_tau_sweep_computes_each_svd_once_and_gives_identical_components(tmp_path):
    pool = _pool()
    n_matrices = sum(1 for v in pool[0].values() if v.dim() == 2) * len(pool)
    for i, tau in enumerate([0.5, 0.7, 0.9]):
        cache = BasisCache(tmp_path)  # a fresh object per job, as in a multirun: only the disk is shared
        cached = decompose_model(pool, tau=tau, rank="energy:0.8", basis_fn=cache.column_basis, progress=False)
        plain = decompose_model(pool, tau=tau, rank="energy:0.8", progress=False)
        assert cache.stats() == ({"hits": 0, "misses": n_matrices} if i == 0 else {"hits": n_matrices, "misses": 0})
        for a, b in zip(cached.shared + [cached.merged_shared], plain.shared + [plain.merged_shared], strict=True):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)
        assert [r.get("shared_dim") for r in cached.report] == [r.get("shared_dim") for r in plain.report]


def test_key_covers_content_dtype_shape_and_lora_scale(tmp_path):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(24, 12, generator=g)
    cache = BasisCache(tmp_path)
    variants = [w, w.clone(), w.double(), w.reshape(12, 24), w + 1e-6]
    [cache.column_basis(v, "full") for v in variants]
    assert cache.stats() == {"hits": 1, "misses": 4}  # only the identical clone hits
    b, a = torch.randn(24, 3, generator=g), torch.randn(3, 12, generator=g)
    for lora in (LoRAFactors(b, a, 1.0), LoRAFactors(b, a, 2.0), LoRAFactors(b, a, 1.0)):
        got = cache.column_basis(lora, "full")
        assert torch.equal(got.U, column_basis(lora, "full").U)
    assert cache.stats() == {"hits": 2, "misses": 6}


def test_bfloat16_tensors_are_keyed_and_cached(tmp_path):
    w = torch.randn(32, 16, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    first = BasisCache(tmp_path).column_basis(w, "energy:0.9")
    again = BasisCache(tmp_path)
    assert torch.equal(again.column_basis(w, "energy:0.9").U, first.U)
    assert again.misses == 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_entry_is_recomputed_not_trusted(tmp_path, damage):
    w = torch.randn(40, 40, generator=torch.Generator().manual_seed(5))
    expected = BasisCache(tmp_path).column_basis(w, "energy:0.9")
    (entry,) = _entries(tmp_path)
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # one byte of U's data: the header still parses, only the checksum can tell
        pos = len(data) - 200
        entry.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    else:
        entry.write_bytes(b"")
    cache = BasisCache(tmp_path)
    got = cache.column_basis(w, "energy:0.9")
    assert cache.stats() == {"hits": 0, "misses": 1}
    assert torch.equal(got.U, expected.U)
    healed = BasisCache(tmp_path)
    healed.column_basis(w, "energy:0.9")
    assert healed.stats() == {"hits": 1, "misses": 0}


def test_randomized_svd_is_deterministic_and_leaves_the_global_rng_alone(tmp_path):
    g = torch.Generator().manual_seed(6)
    w = torch.randn(300, 8, generator=g) @ torch.randn(8, 200, generator=g) + 0.01 * torch.randn(300, 200, generator=g)
    state = torch.get_rng_state()
    a = BasisCache(tmp_path / "one").column_basis(w, "fixed:8")  # auto -> randomized for a small target
    b = BasisCache(tmp_path / "two").column_basis(w, "fixed:8")
    assert torch.equal(torch.get_rng_state(), state)
    assert a.rank == 8 and torch.equal(a.U, b.U)
    exact = column_basis(w, "fixed:8", svd="full")
    cosines = torch.linalg.svdvals(a.U.T @ exact.U)
    assert float(cosines.min()) > 0.99  # the same top subspace as the exact SVD
    warm = BasisCache(tmp_path / "one")
    assert torch.equal(warm.column_basis(w, "fixed:8").U, a.U) and warm.misses == 0
    warm.column_basis(w, "fixed:9")  # another target rank is another randomized SVD
    assert warm.misses == 1


def test_kept_columns_mode_grows_entry_on_demand(tmp_path):
    w = torch.randn(80, 60, generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # the exact route
    cache = BasisCache(tmp_path / "kept", columns="kept")
    small = cache.column_basis(w, "energy:0.3")
    size_small = _entries(tmp_path / "kept")[0].stat().st_size
    big = cache.column_basis(w, "energy:0.9")
    mid = cache.column_basis(w, "energy:0.6")
    assert small.rank < mid.rank < big.rank
    assert cache.stats() == {"hits": 1, "misses": 2}
    assert _entries(tmp_path / "kept")[0].stat().st_size > size_small
    assert torch.equal(mid.U, column_basis(w, "energy:0.6").U)
    BasisCache(tmp_path / "all").column_basis(w, "energy:0.3")
    assert _entries(tmp_path / "all")[0].stat().st_size > _entries(tmp_path / "kept")[0].stat().st_size


def test_concurrent_jobs_compute_a_shared_svd_once(tmp_path):
    w = torch.randn(400, 300, generator=torch.Generator().manual_seed(8))
    caches = [BasisCache(tmp_path) for _ in range(3)]
    results = [None] * 3

    def job(i: int) -> None:
        results[i] = caches[i].column_basis(w, "energy:0.9")

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(c.misses for c in caches) == 1 and sum(c.hits for c in caches) == 2
    assert all(torch.equal(r.U, results[0].U) for r in results)


def test_errors_match_the_engine(tmp_path):
    cache = BasisCache(tmp_path)
    with pytest.raises(ValueError, match="svd="):
        cache.column_basis(torch.randn(4, 4), "full", svd="fast")
    with pytest.raises(ValueError, match="2-D"):
        cache.column_basis(torch.randn(4, 4, 2), "full")
    with pytest.raises(ValueError, match="randomized"):
        cache.column_basis(torch.randn(30, 30), "energy:0.9", svd="randomized")
    with pytest.raises(ValueError, match="columns"):
        BasisCache(tmp_path, columns="some")
