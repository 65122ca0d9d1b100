"""On-disk cache of per-layer column bases (the SVDs of eq. 6), keyed by content, so a tau sweep computes each once.

An entry's key is the sha256 of the task vector's bytes, dtype and shape (both factors and the scale for a
LoRA) plus the SVD backend; tau is not part of it, since tau only selects from the same spectrum (eq. 10).
Exact SVDs are stored once per tensor with their whole spectrum and all columns of U (``columns='kept'``:
as many as any rank rule asked for so far), and the rule is applied on load, so a sweep over tau or over
rank rules hits the cache. A randomized SVD depends on its target rank, so its entries are keyed by the rank
rule too, and it is drawn from a generator seeded by the key: the same tensor and rule give the same basis
whether the cache was cold or warm, and the global random stream is left untouched either way.
Every entry is written atomically with one checksum over its tensors and every metadata field read back
(:mod:`devec.store`); a truncated, corrupt or edited entry is recomputed with a warning, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from devec import store
from devec.engine import ColumnBasis, LoRAFactors, RankRule, as_task_vector, column_basis, parse_rank
from devec.engine import basis as engine_basis
from devec.engine import rank as engine_rank
from devec.engine.basis import SVD_BACKENDS, TaskVector, svd_route
from devec.engine.rank import zero_rtol

FORMAT = "devec-basis/2"


class BasisCache:
    """Content-keyed disk cache of :func:`devec.engine.column_basis`; ``cache.column_basis`` is a drop-in."""

    def __init__(self, root: str | os.PathLike, columns: str = "all") -> None:
        if columns not in ("all", "kept"):
            raise ValueError(f"columns={columns!r}: use 'all' (any later rank rule hits) or 'kept' (smaller entries)")
        self.root = Path(root)
        store.writable(self.root)  # a read-only cache: say so once, before the first SVD
        self.columns = columns
        self.hits = 0
        self.misses = 0

    def column_basis(self, vector: TaskVector, rank: str | int | RankRule | None = "full",
                     svd: str = "auto") -> ColumnBasis:
        """Truncated left singular vectors of one task vector (eq. 6), from disk when this tensor was seen."""
        rule = parse_rank(rank)
        if svd not in SVD_BACKENDS:
            raise ValueError(f"svd={svd!r}: use one of {', '.join(SVD_BACKENDS)}")
        # types, dtype and shape as the engine takes them; NaN/Inf are caught by the engine on a miss (a vector
        # holding them has a key of its own), so a hit costs no extra read pass
        vector = as_task_vector(vector, check_finite=False)
        backend = svd_backend(vector, rule, svd)
        # LoRA bases (QR + a small SVD) and randomized SVDs are keyed by the rule: their U depends on it.
        key = content_key(vector, backend, rule=None if backend in WHOLE_SPECTRUM else rule)
        path = self.root / key[:2] / f"{key}.safetensors"
        where = _Where(vector)
        entry, basis = _lookup(path, key, rule, where)
        if basis is None:
            with store.locked(path):  # another process computing the same SVD: wait for it rather than repeat it
                entry, basis = _lookup(path, key, rule, where, warn=False)
                if basis is None:
                    self.misses += 1
                    return self._compute_and_store(vector, rule, svd, backend, key, path, entry, where)
        self.hits += 1
        return basis

    def _compute_and_store(self, vector: TaskVector, rule: RankRule, svd: str, backend: str, key: str, path: Path,
                           old: dict | None, where: _Where) -> ColumnBasis:
        basis = _compute(vector, rule, svd, backend)
        if backend not in WHOLE_SPECTRUM:
            _write_entry(path, key, basis, backend)
            return basis
        kept = _select(_as_entry(basis, backend), rule, where)
        if self.columns == "kept":  # as many columns as any rule asked for so far
            width = max(kept.rank, old["U"].shape[1] if old is not None else 0)
            basis = ColumnBasis(basis.U[:, :width].contiguous(), basis.singular_values, basis.total_energy)
        _write_entry(path, key, basis, backend)
        return kept

    def stats(self) -> dict[str, int]:
        """Hits and misses of this cache object so far."""
        return {"hits": self.hits, "misses": self.misses}


SVD_ROUTES = ("exact", "lora", "randomized", "gram")
WHOLE_SPECTRUM = ("exact",)  # stored with every column, the rank rule applied on load; other routes are keyed by it


def svd_backend(vector: TaskVector, rule: RankRule, svd: str) -> str:
    """Which SVD :func:`devec.engine.column_basis` runs: 'lora', 'randomized', 'gram' or 'exact'."""
    if isinstance(vector, LoRAFactors):
        return "lora"
    route = svd_route(tuple(vector.shape), rule, svd, vector.dtype)
    return "exact" if route == "full" else route


def content_key(vector: TaskVector, backend: str, rule: RankRule | None = None) -> str:
    """sha256 of the tensor bytes, dtype and shape (both factors and the scale for a LoRA) and the backend."""
    h = hashlib.sha256(f"{FORMAT}|{_engine_code()}|{backend}|{rule if rule is not None else ''}".encode())
    parts: Sequence[torch.Tensor] = (vector.B, vector.A) if isinstance(vector, LoRAFactors) else (vector,)
    if isinstance(vector, LoRAFactors):
        h.update(f"|scale={vector.scale!r}".encode())
    for t in parts:
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


@functools.cache
def _engine_code() -> str:
    """sha256 of the engine's basis and rank-rule code: a change to how bases are computed or truncated (the zero
    threshold included) invalidates the cache."""
    h = hashlib.sha256()
    for module in (engine_basis, engine_rank):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (any dtype, bfloat16 included), without a copy when it is contiguous on CPU."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _compute(vector: TaskVector, rule: RankRule, svd: str, backend: str) -> ColumnBasis:
    if backend in WHOLE_SPECTRUM:  # whole spectrum once; every rank rule is a prefix of these columns
        return column_basis(vector, "full", svd="full")
    return column_basis(vector, rule, svd=svd)  # LoRA, Gram or randomized (seeded in the engine): keyed by the rule


class _Where:
    """What applying a rank rule to a stored spectrum needs to know of the vector: shape, zero threshold, device."""

    def __init__(self, vector: TaskVector) -> None:
        self.shape = (int(vector.shape[0]), int(vector.shape[1]))
        self.rtol = zero_rtol(vector.dtype, self.shape)
        self.device = (vector.B if isinstance(vector, LoRAFactors) else vector).device


def _lookup(path: Path, key: str, rule: RankRule, where: _Where, warn: bool = True
            ) -> tuple[dict | None, ColumnBasis | None]:
    """The stored entry and the basis it gives for ``rule`` (None when absent, damaged or too narrow)."""
    entry = _read_entry(path, key, warn)
    return entry, (_select(entry, rule, where) if entry is not None else None)


def _select(entry: dict, rule: RankRule, where: _Where) -> ColumnBasis | None:
    """Apply the rank rule to a stored exact spectrum; None when the entry holds too few columns of U."""
    u, s, total = entry["U"].to(where.device), entry["s"].to(where.device), entry["total_energy"]
    if entry["backend"] not in WHOLE_SPECTRUM:
        return ColumnBasis(u, s, total)
    r = rule.select(s, where.shape, total_energy=total, rtol=where.rtol)
    if r > u.shape[1]:
        return None
    return ColumnBasis(u[:, :r].contiguous(), s, total)


def _as_entry(basis: ColumnBasis, backend: str = "exact") -> dict:
    return {"U": basis.U, "s": basis.singular_values, "total_energy": basis.total_energy, "backend": backend}


def _write_entry(path: Path, key: str, basis: ColumnBasis, backend: str) -> None:
    """Store U and s with every field read back (key, backend, total energy) under one checksum; skipped read-only."""
    meta = {"format": FORMAT, "key": key, "backend": backend, "total_energy": float(basis.total_energy)}
    store.save_entry(path, {"U": basis.U, "s": basis.singular_values}, meta)


def _read_entry(path: Path, key: str, warn: bool = True) -> dict | None:
    """The stored entry if complete and its checksum (data and metadata) holds; None (to recompute) otherwise."""
    found = store.load_entry(path, {"format": FORMAT, "key": key}, warn=warn)
    if found is None:
        return None
    tensors, meta = found
    if set(tensors) != {"U", "s"} or meta.get("backend") not in SVD_ROUTES:
        return None
    return {"U": tensors["U"], "s": tensors["s"], "total_energy": float(meta["total_energy"]),
            "backend": meta["backend"]}
