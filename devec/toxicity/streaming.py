"""Iterative unique extraction streamed layer by layer from checkpoint shards, cached on disk (Sec. 4.3).

The pool of k task vectors is never held at once: for each parameter, the pre-trained tensor and the k+1 task
vectors (toxic + pool) are read, the toxic vector's unique part is computed with :func:`devec.engine.iterative`,
and the tensors are released. Each transformer layer's results go to ``<cache>/<group>.safetensors`` plus a
``<group>.json`` report written last (atomically), so a killed run resumes from the last finished layer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from devec import io
from devec.dtypes import DTYPES, torch_dtype
from devec.engine import iterative
from devec.toxicity.sources import DoRASource, FullSource
from devec.toxicity.tiny import config_key
from devec.vectors import ParamPolicy, open_checkpoint

Source = FullSource | DoRASource


def layer_group(name: str) -> str:
    """The cache group of a parameter: ``layer_007`` for ``model.layers.7.*``, ``other`` otherwise."""
    m = re.search(r"layers\.(\d+)\.", name)
    return f"layer_{int(m.group(1)):03d}" if m else "other"


def source_identity(path: str | Path) -> dict[str, Any]:
    """Path, sizes and modification times of a checkpoint's files (cache key: a rebuilt model invalidates it)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".json"))
    return {"path": str(p.resolve()), "files": [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]}


class VectorStore:
    """A task vector cached by groups of safetensors files; tensors are read lazily by name."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._where: dict[str, Path] = {}
        for f in sorted(self.root.glob("*.safetensors")):
            if (f.with_suffix(".json")).exists():
                for k in open_checkpoint(f).keys():
                    self._where[k] = f

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, name: str) -> torch.Tensor:
        return open_checkpoint(self._where[name]).get(name)

    def report(self) -> list[dict[str, Any]]:
        rows = []
        for f in sorted(self.root.glob("*.json")):
            if f.name != "meta.json":
                rows += json.loads(f.read_text())
        return rows

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {k: self.get(k) for k in self.keys()}


def stream_unique(base: str | Path, target: Source, others: Sequence[Source], cache_root: str | Path, *,
                  tau: float = 0.85, rank: str = "energy:0.9", method: str = "lowrank", svd: str = "auto",
                  policy: ParamPolicy | None = None, store_dtype: str = "float32", device: str = "cpu",
                  progress: Callable[[Iterable, str], Iterable] | None = None,
                  on_group: Callable[[str], None] | None = None) -> VectorStore:
    """``T_unique`` of ``target`` against ``others`` in turn (iterative mode), streamed and cached per layer.

    ``others`` empty gives the plain task vector T (the negation baseline) through the same path.
    ``on_group`` is called after each finished group (tests interrupt a run there).
    """
    policy = policy or ParamPolicy()
    store = torch_dtype(store_dtype, "store_dtype", allowed=DTYPES)
    key = {"base": source_identity(base), "target": source_identity(target.path if isinstance(target, DoRASource)
                                                                     else target.ckpt.source),
           "others": [source_identity(o.path if isinstance(o, DoRASource) else o.ckpt.source) for o in others],
           "tau": tau, "rank": str(rank), "method": method, "svd": svd, "policy": repr(policy),
           "dtype": store_dtype}
    root = Path(cache_root) / f"unique-{config_key(key)}"
    io.write_json(root / "meta.json", {"target": target.name, "others": [o.name for o in others], **key})
    pre = open_checkpoint(base)
    groups: dict[str, list[str]] = {}
    for name in pre.keys():
        groups.setdefault(layer_group(name), []).append(name)
    todo = [g for g in groups if not (root / f"{g}.json").exists()]
    items: Iterable = todo if progress is None else progress(todo, f"unique toxic vector ({len(others)} in pool)")
    for group in items:
        tensors, rows = {}, []
        for name in groups[group]:
            w_pre = pre.get(name)
            t = target.delta(name, w_pre)
            if t is None or not bool(t.any()):
                continue
            row: dict[str, Any] = {"name": name, "shape": "x".join(map(str, t.shape))}
            action = policy.action(name, tuple(t.shape))
            if action == "exclude":
                row["action"] = "exclude"
                rows.append(row)
                continue
            if action == "decompose" and others:
                pool = [d for o in others if (d := o.delta(name, w_pre)) is not None and bool(d.any())]
                row["pool_size"] = len(pool)
                unique = _unique(t, pool, tau, rank, method, svd, device) if pool else t
            else:
                unique = t
                if action == "average" and others:
                    pool = [d for o in others if (d := o.delta(name, w_pre)) is not None]
                    unique = t - torch.stack([t, *pool]).mean(0)
            row["action"] = action if others else "task_vector"
            before = float(t.double().norm())
            row["unique_energy"] = (float(unique.double().norm()) / before) ** 2 if before > 0 else 0.0
            tensors[name] = unique.to(store).cpu()
            rows.append(row)
            del t, w_pre
        io.save_safetensors(root / f"{group}.safetensors", tensors)
        io.write_json(root / f"{group}.json", rows)
        if on_group is not None:
            on_group(group)
    return VectorStore(root)


def _unique(t: torch.Tensor, pool: list[torch.Tensor], tau: float, rank: str, method: str, svd: str,
            device: str) -> torch.Tensor:
    shape = t.shape
    mats = [v.reshape(v.shape[0], -1).to(device) for v in (t, *pool)]
    return iterative(mats[0], mats[1:], tau=tau, rank=rank, method=method, svd=svd).reshape(shape).cpu()


@torch.no_grad()
def apply_vectors(model: torch.nn.Module, terms: Sequence[tuple[float, VectorStore | Mapping[str, torch.Tensor]]]
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
            v = vec.get(name) if isinstance(vec, VectorStore) else vec[name]
            p.add_(v.to(device=p.device, dtype=p.dtype), alpha=coef)
    return model
