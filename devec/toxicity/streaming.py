"""The toxic vector's unique part (Sec. 4.3), streamed from checkpoint shards through the one decomposition driver.

The pool of k task vectors is never held at once: :class:`devec.vectors.SourcePool` reads, per parameter, the
pre-trained tensor and the k + 1 task vectors (toxic + pool; full checkpoints or DoRA adapters), and
:func:`devec.vectors.decompose_to_store` (iterative mode, the toxic vector as target) decomposes it and stores each
transformer layer as a checksummed unit of a :class:`devec.resume.UnitStore`. The store is keyed by the
checkpoints' content fingerprints, the settings, the stored dtype and devec's code version (no paths): a killed
run resumes at its first unfinished layer, a damaged layer file is recomputed, a moved cache is reused.

Parameters the policy excludes are never read: they have nothing to edit, and reading them would cost a DoRA merge
(or a full-checkpoint read) each. ``names`` restricts a run to some parameters (a partial run, a benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch

from devec.dtypes import DTYPES, torch_dtype
from devec.engine import column_basis
from devec.toxicity.sources import DoRASource, FullSource
from devec.vectors import (
    DecompositionSettings,
    ParamPolicy,
    SourcePool,
    StoredVectors,
    decompose_to_store,
    layer_group,
    store_for,
)

Source = FullSource | DoRASource

__all__ = ["apply_vectors", "layer_group", "stream_unique"]


def stream_unique(base: str | Path, target: Source, others: Sequence[Source], cache_root: str | Path, *,
                  settings: DecompositionSettings | None = None, tau: float = 0.85, rank: str = "energy:0.9",
                  method: str = "lowrank", svd: str = "auto", policy: ParamPolicy | None = None,
                  basis_fn: Callable = column_basis, resume: bool = True, store_dtype: str = "float32",
                  device: str = "cpu", progress: Callable[[Iterable, str], Iterable] | None = None,
                  on_group: Callable[[str], None] | None = None, names: Sequence[str] | None = None
                  ) -> StoredVectors:
    """``T_unique`` of ``target`` against ``others`` in turn (iterative mode), streamed and stored per layer.

    ``settings`` (mode and target are set here) or the loose ``tau``, ``rank``, ``method``, ``svd``, ``policy``;
    ``others`` empty gives the plain task vector T (the negation baseline) through the same path; ``resume=False``
    recomputes every layer; ``on_group`` is called after each computed layer (tests interrupt a run there);
    ``names``: only these parameters are read and decomposed (None: every one the policy does not exclude).
    """
    if settings is None:
        settings = DecompositionSettings(mode="iterative", tau=tau, rank=rank, method=method, svd=svd,
                                         policy=policy or ParamPolicy())
    settings = settings.replace(mode="iterative", target=0)
    dtype = torch_dtype(store_dtype, "pool.store_dtype", allowed=DTYPES)
    pool = SourcePool(base, [target, *others])
    unknown = sorted(set(names or ()) - set(pool.names))
    if unknown:
        raise ValueError(f"names {unknown[:3]} are not parameters of the pre-trained checkpoint {base}")
    pool.names = [n for n in pool.names if (names is None or n in names)
                  and settings.policy.action(n, tuple(pool.shape(n))) != "exclude"]
    only = {"names": sorted(pool.names)} if names is not None else {}
    store = store_for(cache_root, pool, settings, prefix="unique-", dtype=store_dtype, **only)
    stored = decompose_to_store(pool, settings, store, basis_fn=basis_fn, resume=resume, progress=progress or False,
                                device=device, dtype=dtype, on_unit=on_group)
    return stored.vectors("unique_target")


@torch.no_grad()
def apply_vectors(model: torch.nn.Module, terms: Sequence[tuple[float, StoredVectors | Mapping[str, torch.Tensor]]]
                  ) -> torch.nn.Module:
    """Edit ``model`` in place: ``W = W_pre + sum_i coef_i * V_i`` (negation: coef = -lambda), tensor by tensor."""
    params = dict(model.named_parameters())
    for coef, vec in terms:
        if coef == 0:
            continue
        for name in vec.keys():
            if name not in params:
                raise KeyError(f"task vector parameter {name!r} is not in the model; is the pool's base the same "
                               "architecture as pool.base?")
            p = params[name]
            p.add_(vec.get(name).to(device=p.device, dtype=p.dtype), alpha=coef)
    return model
