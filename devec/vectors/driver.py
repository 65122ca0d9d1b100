"""The one whole-model decomposition every domain uses: walk a pool's parameters, apply the policy, call the engine.

:func:`decompose_model` (results in memory) and :func:`decompose_to_store` (results on disk, read back one unit
at a time) walk a pool (:mod:`devec.vectors.model`: in memory, or streamed from checkpoint files) parameter by
parameter, apply the :class:`ParamPolicy` and hand every matrix to :mod:`devec.engine.modes` (joint, pairwise or
iterative). Settings travel as one frozen :class:`DecompositionSettings`; column bases come from ``basis_fn``
(a :class:`devec.cache.BasisCache` when ``decomposition.cache`` is on: :meth:`DecompositionSettings.basis_fn`).

Parameters are grouped into units (one transformer block each, :func:`layer_group`). Given a
:class:`devec.resume.UnitStore`, every finished unit is stored (atomic, checksummed), so a killed run resumes at
its first unfinished unit, ``resume=False`` recomputes every unit, and a damaged unit (a flipped bit, a truncated
or deleted file) is recomputed with a warning. Store keys (:func:`store_for`) hold the pool's content
fingerprint, the settings and devec's code version, never absolute paths.

NaN/Inf are checked as each tensor is read (one sum per tensor), not by a pre-scan: for a pool of 10 x 7B a
pre-scan reads every weight once more (about 140 GB of I/O) on every run, healthy or not, to spare the layers
before a bad one in the rare failing run. Per-layer units spare them anyway: each finished layer is stored, and
its SVDs are in the content-keyed basis cache, so the run after the repair takes them from the store or the
cache instead of recomputing them. In-memory pools (vision, style) are checked whole before any decomposition.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from devec.engine import (
    MODES,
    ColumnBasis,
    LoRAFactors,
    TaskVector,
    chance_shared_dim,
    column_basis,
    frobenius_norm,
    parse_rank,
)
from devec.engine import modes as engine_modes
from devec.engine.basis import SVD_BACKENDS
from devec.engine.decompose import check_pool
from devec.engine.subspace import METHODS
from devec.vectors.model import InMemoryPool
from devec.vectors.policy import ParamPolicy

log = logging.getLogger(__name__)

NEAR_IDENTITY = 0.9
BasisFn = Callable[..., ColumnBasis]
Progress = bool | Callable[..., Iterable]


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class DecompositionSettings:
    """What a decomposition computes (the ``decomposition`` config block, plus the iterative ``target``).

    ``cache`` changes where column bases come from (:meth:`basis_fn`) and ``device`` where the engine runs (the
    float64 Gram/eigh of every layer; None: where the vectors are), never the results: neither is in :meth:`key`.
    ``chance_draws``: draws of random subspaces behind each layer's ``chance_dim`` (:mod:`devec.engine.chance`);
    0 leaves it out. It changes the report, so it is in :meth:`key`.
    """

    mode: str = "joint"
    tau: float = 0.85
    rank: str | int | None = "energy:0.9"
    method: str = "lowrank"
    svd: str = "auto"
    policy: ParamPolicy = field(default_factory=ParamPolicy)
    target: int = 0
    cache: bool = False
    device: str | None = None
    chance_draws: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"decomposition.mode={self.mode!r}: use one of {', '.join(MODES)}")
        tau = self.tau
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0 < float(tau) <= 1:
            raise ValueError(f"decomposition.tau={tau!r}: use a number in (0, 1]")
        object.__setattr__(self, "tau", float(tau))
        parse_rank(self.rank)  # a bad rank rule fails here, before any model is read
        if self.method not in METHODS:
            raise ValueError(f"decomposition.method={self.method!r}: use one of {', '.join(METHODS)}")
        if self.svd not in SVD_BACKENDS:
            raise ValueError(f"decomposition.svd={self.svd!r}: use one of {', '.join(SVD_BACKENDS)}")
        if not isinstance(self.policy, ParamPolicy):
            raise ValueError(f"decomposition.policy: expected a ParamPolicy, got {type(self.policy).__name__}")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise ValueError(f"target={self.target!r}: use the index of the target task vector in the pool")
        if not isinstance(self.cache, bool):
            raise ValueError(f"decomposition.cache={self.cache!r}: use true or false")
        draws = self.chance_draws
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
            raise ValueError(f"decomposition.chance_draws={draws!r}: use an integer >= 0 (0 leaves out the chance "
                             "level of sharing)")
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"decomposition.device={self.device!r}: use cpu, cuda, cuda:N or null (the run's device)")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **changes: Any) -> DecompositionSettings:
        """From a ``decomposition`` config block; ``changes`` override (or stand in for) its keys."""
        read = {"mode": lambda: cfg["mode"], "tau": lambda: cfg["tau"], "rank": lambda: cfg["rank"],
                "method": lambda: cfg.get("method", "lowrank"), "svd": lambda: cfg.get("svd", "auto"),
                "policy": lambda: ParamPolicy.from_config(cfg.get("policy")),
                "cache": lambda: cfg.get("cache", True), "device": lambda: cfg.get("device"),
                "chance_draws": lambda: cfg.get("chance_draws", 8)}
        return cls(**{key: changes[key] if key in changes else get() for key, get in read.items()},
                   **{key: v for key, v in changes.items() if key not in read})

    def replace(self, **changes: Any) -> DecompositionSettings:
        """A copy with some fields changed (e.g. ``mode`` or ``tau``), validated again."""
        return dataclasses.replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """Everything that changes the results, as plain values (store keys)."""
        return {"mode": self.mode, "tau": self.tau, "rank": str(self.rank), "method": self.method, "svd": self.svd,
                "policy": repr(self.policy), "target": self.target, "chance_draws": self.chance_draws}

    def basis_fn(self, cache_dir: str | Path | None) -> BasisFn:
        """Where column bases come from: the on-disk basis cache under ``cache_dir/bases`` when ``cache`` is on
        (a tau sweep computes each SVD once), else :func:`devec.engine.column_basis`."""
        if cache_dir is None or not self.cache:
            return column_basis
        from devec.cache import BasisCache

        return BasisCache(Path(cache_dir) / "bases").column_basis


def store_for(root: str | Path, pool: Any, settings: DecompositionSettings, prefix: str = "",
              **extra: Any) -> Any:
    """The :class:`UnitStore` of this pool and these settings: ``<root>/<prefix><key>``, keyed by content and code."""
    from devec.resume import UnitStore, code_fingerprint

    key = {"pool": pool.fingerprint(), "settings": settings.key(), "code": code_fingerprint(), **extra}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return UnitStore(Path(root) / f"{prefix}{digest}")


# ---------------------------------------------------------------- results

@dataclass
class LayerResult:
    """One parameter's components; which fields are set depends on the mode."""

    name: str
    action: str
    shared: list[TaskVector] | None = None
    unique: list[TaskVector] | None = None
    merged_shared: TaskVector | None = None
    pairwise_shared: dict[tuple[int, int], TaskVector] | None = None
    unique_target: TaskVector | None = None
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelDecomposition:
    """Whole-model components as state dicts; parameters with action ``exclude`` are absent (not edited)."""

    mode: str
    k: int
    shared: list[dict[str, TaskVector]] = field(default_factory=list)
    unique: list[dict[str, TaskVector]] = field(default_factory=list)
    merged_shared: dict[str, TaskVector] = field(default_factory=dict)
    pairwise_shared: dict[tuple[int, int], dict[str, TaskVector]] = field(default_factory=dict)
    unique_target: dict[str, TaskVector] = field(default_factory=dict)
    report: list[dict[str, Any]] = field(default_factory=list)

    def pairwise_dense(self) -> list[dict[str, torch.Tensor]]:
        """The pairwise shared components as dense state dicts, in pair order (0, 1), (0, 2), ... (pairwise mode
        keeps decomposed matrices as rank-d :class:`LoRAFactors`; this forms each ``scale * B @ A``)."""
        return [dense_state(self.pairwise_shared[pair]) for pair in sorted(self.pairwise_shared)]

    def add(self, layer: LayerResult) -> None:
        self.report.append(layer.report)
        if layer.action == "exclude":
            return
        if layer.shared is not None:
            for i in range(self.k):
                self.shared[i][layer.name] = layer.shared[i]
                self.unique[i][layer.name] = layer.unique[i]
            self.merged_shared[layer.name] = layer.merged_shared
        if layer.pairwise_shared is not None:
            for pair, v in layer.pairwise_shared.items():
                self.pairwise_shared.setdefault(pair, {})[layer.name] = v
        if layer.unique_target is not None:
            self.unique_target[layer.name] = layer.unique_target


def dense_state(state: Mapping[str, TaskVector]) -> dict[str, torch.Tensor]:
    """A state dict of components with every :class:`LoRAFactors` formed densely (``scale * B @ A``)."""
    return {k: v.dense() if isinstance(v, LoRAFactors) else v for k, v in state.items()}


class StoredVectors:
    """One component of a stored decomposition (e.g. ``unique_target``): ``keys``, ``get``, ``items``, ``report``.

    Tensors are read one unit at a time (the last unit read is kept), so a 7B vector never sits in memory whole.
    """

    def __init__(self, store: Any, units: Sequence[str], component: str) -> None:
        self.store, self.component, self.root = store, component, Path(store.root)
        self._rows: list[dict[str, Any]] = []
        self._where: dict[str, str] = {}
        for unit in units:
            meta = store.load(_meta(unit))
            self._rows += meta["rows"]
            self._where.update({name: unit for name in meta["keys"].get(component, [])})
        self._cached: tuple[str | None, dict[str, TaskVector]] = (None, {})

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> TaskVector:
        unit = self._where[name]
        if self._cached[0] != unit:
            layers = _load_unit(self.store, unit)
            self._cached = (unit, {layer.name: v for layer in layers for c, v in _components(layer)
                                   if c == self.component})
        return self._cached[1][name]

    def items(self) -> Iterator[tuple[str, TaskVector]]:
        for name in self.keys():
            yield name, self.get(name)

    def report(self) -> list[dict[str, Any]]:
        """The per-layer report rows of every unit."""
        return list(self._rows)

    def to_dict(self) -> dict[str, TaskVector]:
        return dict(self.items())


# ---------------------------------------------------------------- the driver

def decompose_model(pool: Any, settings: DecompositionSettings | None = None, *, basis_fn: BasisFn = column_basis,
                    store: Any = None, resume: bool = True, progress: Progress = True, device: str | None = None,
                    dtype: torch.dtype | None = None, group: Callable[[str], str] | None = None,
                    on_unit: Callable[[str], None] | None = None, **fields: Any) -> ModelDecomposition:
    """Decompose every parameter of a pool into state dicts and a per-layer report (components in memory).

    ``settings`` or its fields as keywords (``mode=``, ``tau=``, ...); ``store``: a UnitStore for resume;
    ``dtype``/``device``: the components' dtype, and where the engine runs (default ``settings.device``; results
    come back to the device the vectors were read on).
    """
    settings, pool = _prepare(pool, settings, fields)
    device = _engine_device(device, settings)
    result = ModelDecomposition(mode=settings.mode, k=len(pool))
    if settings.mode == "joint":
        result.shared = [{} for _ in range(len(pool))]
        result.unique = [{} for _ in range(len(pool))]
    layers: dict[str, LayerResult] = {}
    for _, unit_layers in _run_units(pool, settings, basis_fn, store, resume, progress, device, dtype,
                                     group or layer_group, on_unit, load=True):
        layers.update((layer.name, layer) for layer in unit_layers)
    for name in pool.names:  # parameter order, whatever the grouping
        if name in layers:
            result.add(layers[name])
    warn_near_identity(result.report)
    return result


def decompose_to_store(pool: Any, settings: DecompositionSettings, store: Any, *, basis_fn: BasisFn = column_basis,
                       resume: bool = True, progress: Progress = True, device: str | None = None,
                       dtype: torch.dtype | None = None, group: Callable[[str], str] | None = None,
                       on_unit: Callable[[str], None] | None = None) -> StoredDecomposition:
    """Decompose every parameter into ``store`` unit by unit, holding no component in memory (streamed pools)."""
    settings, pool = _prepare(pool, settings, {})
    device = _engine_device(device, settings)
    units = [unit for unit, _ in _run_units(pool, settings, basis_fn, store, resume, progress, device, dtype,
                                            group or layer_group, on_unit, load=False)]
    stored = StoredDecomposition(store, units, settings)
    warn_near_identity(stored.report())
    return stored


@dataclass
class StoredDecomposition:
    """What :func:`decompose_to_store` wrote: the store, its units in order, and the settings."""

    store: Any
    units: list[str]
    settings: DecompositionSettings

    def vectors(self, component: str) -> StoredVectors:
        """One component (``unique_target``, ``merged_shared``, ``shared.0``, ``pairwise.0.1``...) read lazily."""
        return StoredVectors(self.store, self.units, component)

    def report(self) -> list[dict[str, Any]]:
        """The per-layer report rows of every unit, in order."""
        return [row for unit in self.units for row in self.store.load(_meta(unit))["rows"]]


def iter_decompose(pool: Any, settings: DecompositionSettings | None = None, *, basis_fn: BasisFn = column_basis,
                   progress: Progress = True, names: Sequence[str] | None = None, device: str | None = None,
                   dtype: torch.dtype | None = None, **fields: Any) -> Iterator[LayerResult]:
    """Yield one :class:`LayerResult` per parameter, reading the pool lazily (no store, no grouping)."""
    settings, pool = _prepare(pool, settings, fields)
    device = _engine_device(device, settings)
    for name in _progress(list(names or pool.names), f"DeVec {settings.mode}", progress):
        layer = decompose_parameter(pool, name, settings, basis_fn, device, dtype)
        if layer is not None:
            yield layer


def layer_group(name: str) -> str:
    """The unit of a parameter: ``layer_007`` for ``model.layers.7.*`` (first numeric component), else ``other``."""
    m = re.search(r"(?:^|\.)(\d+)\.", name)
    return f"layer_{int(m.group(1)):03d}" if m else "other"


def warn_near_identity(report: Sequence[Mapping[str, Any]]) -> None:
    """One warning naming the layers whose kept rank makes the projection nearly the identity."""
    near = [r["name"] for r in report if r.get("near_identity")]
    if near:
        log.warning("%d layer(s) keep a rank >= %.0f%% of their row dimension, so their projection is nearly the "
                    "identity and almost everything is shared: %s. Lower decomposition.rank (e.g. energy:0.5).",
                    len(near), 100 * NEAR_IDENTITY, ", ".join(near[:5]))


def decompose_parameter(pool: Any, name: str, settings: DecompositionSettings, basis_fn: BasisFn = column_basis,
                        device: str | None = None, dtype: torch.dtype | None = None) -> LayerResult | None:
    """One parameter through the policy and :mod:`devec.engine.modes`; None when the iterative target leaves it
    untouched (nothing to edit, no report row)."""
    shape = tuple(pool.shape(name))
    action = settings.policy.action(name, shape)
    if settings.mode == "iterative":
        target = pool.vectors(name, [settings.target])[settings.target]  # the others only if the target changes it
        if target is None or _is_zero(target):
            return None
        home = _device_of(target)
        rest = [i for i in range(len(pool)) if i != settings.target]
        read = pool.vectors(name, rest) if rest and action != "exclude" else []
        others = [(i, v) for i, v in enumerate(read) if v is not None]
        layer = _iterative_parameter(name, shape, target, others, action, len(pool), settings, basis_fn, device)
    else:
        vectors = [torch.zeros(shape) if v is None else v for v in pool.vectors(name)]
        home = _device_of(vectors[0])
        if action == "decompose":
            layer = _decompose_layer(name, vectors, settings, 0, basis_fn, device)
        else:
            layer = _policy_layer(name, vectors, action, settings.mode, 0)
    return _finish(layer, dtype, device, home)


# ---------------------------------------------------------------- units and the store

def _prepare(pool: Any, settings: DecompositionSettings | None, fields: Mapping[str, Any]
             ) -> tuple[DecompositionSettings, Any]:
    """Settings (from keywords when not given) and the pool (an in-memory one from state dicts), checked."""
    if settings is None:
        settings = DecompositionSettings(**fields)
    elif fields:
        settings = settings.replace(**fields)
    if not hasattr(pool, "vectors"):
        pool = InMemoryPool(pool)
    k = len(pool)
    if settings.mode != "iterative" and k < 2:
        raise ValueError(f"DeVec needs a pool of at least two task vectors, got {k}")
    if settings.mode == "iterative" and not 0 <= settings.target < k:
        raise ValueError(f"target={settings.target} is not an index into the pool of {k} task vectors")
    return settings, pool


def _run_units(pool: Any, settings: DecompositionSettings, basis_fn: BasisFn, store: Any, resume: bool,
               progress: Progress, device: str | None, dtype: torch.dtype | None, group: Callable[[str], str],
               on_unit: Callable[[str], None] | None, load: bool) -> Iterator[tuple[str, list[LayerResult]]]:
    """Each unit's layers, from ``store`` when finished there (``[]`` unless ``load``), else computed and stored."""
    units: dict[str, list[str]] = {}
    for name in pool.names:
        units.setdefault(group(name), []).append(name)
    for unit in _progress(list(units), f"DeVec {settings.mode}", progress):
        if store is not None and resume and _unit_done(store, unit):
            yield unit, (_load_unit(store, unit) if load else [])
            continue
        layers = [layer for name in units[unit]
                  if (layer := decompose_parameter(pool, name, settings, basis_fn, device, dtype)) is not None]
        if store is not None:
            tensors, meta = _pack(layers, len(pool))
            store.save(_tensors(unit), tensors)
            store.save(_meta(unit), meta)  # last: the unit counts as done only when both are stored
        if on_unit is not None:
            on_unit(unit)
        yield unit, layers


def _tensors(unit: str) -> str:
    return f"{unit}/tensors"


def _meta(unit: str) -> str:
    return f"{unit}/meta"


def _unit_done(store: Any, unit: str) -> bool:
    """Both entries stored and intact (the store warns about, and so recomputes, a damaged one)."""
    return all([store.done(_tensors(unit)), store.done(_meta(unit))])


def _components(layer: LayerResult) -> Iterator[tuple[str, TaskVector]]:
    """(component, value) pairs of one layer: ``shared.i``, ``unique.i``, ``merged_shared``, ``pairwise.i.j``,
    ``unique_target``."""
    if layer.shared is not None:
        for i, (s, u) in enumerate(zip(layer.shared, layer.unique, strict=True)):
            yield f"shared.{i}", s
            yield f"unique.{i}", u
        yield "merged_shared", layer.merged_shared
    for (i, j), v in (layer.pairwise_shared or {}).items():
        yield f"pairwise.{i}.{j}", v
    if layer.unique_target is not None:
        yield "unique_target", layer.unique_target


def _pack(layers: Sequence[LayerResult], k: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A unit as (tensors, JSON): ``component|name`` tensors (LoRA: ``|B`` and ``|A``), rows, actions, keys."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"k": k, "rows": [layer.report for layer in layers],
                            "actions": {layer.name: layer.action for layer in layers}, "keys": {}, "scales": {}}
    storages: set[int] = set()
    for layer in layers:
        for component, v in _components(layer):
            key = f"{component}|{layer.name}"
            meta["keys"].setdefault(component, []).append(layer.name)
            parts = {f"{key}|B": v.B, f"{key}|A": v.A} if isinstance(v, LoRAFactors) else {key: v}
            if isinstance(v, LoRAFactors):
                meta["scales"][key] = v.scale
            for part, t in parts.items():
                t = t.detach().to("cpu").contiguous()
                if t.untyped_storage().data_ptr() in storages:  # safetensors refuses tensors sharing memory
                    t = t.clone()
                storages.add(t.untyped_storage().data_ptr())
                tensors[part] = t
    return tensors, meta


def _load_unit(store: Any, unit: str) -> list[LayerResult]:
    """The layers of a stored unit, in the order they were computed."""
    tensors, meta = store.load(_tensors(unit)), store.load(_meta(unit))
    k = int(meta["k"])
    layers = {name: LayerResult(name, action) for name, action in meta["actions"].items()}
    for row in meta["rows"]:
        layers[row["name"]].report = row
    for component, names in meta["keys"].items():
        for name in names:
            key = f"{component}|{name}"
            scale = meta["scales"].get(key)
            v = tensors[key] if scale is None else LoRAFactors(tensors[f"{key}|B"], tensors[f"{key}|A"], scale)
            _set_component(layers[name], component, v, k)
    return list(layers.values())


def _set_component(layer: LayerResult, component: str, v: TaskVector, k: int) -> None:
    kind, *index = component.split(".")
    if kind in ("shared", "unique"):
        if layer.shared is None:
            layer.shared, layer.unique = [None] * k, [None] * k
        getattr(layer, kind)[int(index[0])] = v
    elif kind == "pairwise":
        layer.pairwise_shared = layer.pairwise_shared or {}
        layer.pairwise_shared[(int(index[0]), int(index[1]))] = v
    else:
        setattr(layer, kind, v)


def _progress(items: list, desc: str, progress: Progress) -> Iterable:
    if callable(progress):
        return progress(items, desc)
    return tqdm(items, desc=desc, disable=not progress, dynamic_ncols=True)


# ---------------------------------------------------------------- one parameter

def _iterative_parameter(name: str, shape: tuple[int, ...], target: TaskVector,
                         others: list[tuple[int, TaskVector]], action: str, k: int, settings: DecompositionSettings,
                         basis_fn: BasisFn, device: str | None) -> LayerResult:
    """The target's unique part: decomposed against the members that change this parameter (``others``: (pool
    index, vector), in pool order), or by the policy."""
    if action == "exclude" or k == 1:
        action = "exclude" if action == "exclude" else "task_vector"  # no pool: the unique part is T itself
        report = {"name": name, "shape": _shape(shape), "action": action}
        if action == "exclude":
            return LayerResult(name, action, report=report)
        return LayerResult(name, action, unique_target=target, report={**report, "unique_energy": 1.0})
    if action == "decompose":
        used = [(i, v) for i, v in others if not _is_zero(v)]  # a zero vector shares nothing: skip its SVD
        if not used:
            return LayerResult(name, action, unique_target=target,
                               report={"name": name, "shape": _shape(shape), "action": action, "pool_size": 0,
                                       "shared_dim": 0, "unique_energy": 1.0, "shared_energy": 0.0,
                                       **({"chance_dim": 0.0} if settings.chance_draws else {})})
        at = sum(1 for i, _ in used if i < settings.target)  # the target's place among the members used
        vectors = [v for _, v in used]
        layer = _decompose_layer(name, vectors[:at] + [target] + vectors[at:], settings, at, basis_fn, device)
        layer.report["pool_size"] = len(used)
        return layer
    layer = _policy_layer(name, [target, *(v for _, v in others)], action, "iterative", 0)
    layer.report["unique_energy"] = _energy_ratio(layer.unique_target, target)
    return layer


def _decompose_layer(name: str, vectors: list[TaskVector], settings: DecompositionSettings, target: int,
                     basis_fn: BasisFn, device: str | None) -> LayerResult:
    shape = tuple(vectors[0].shape)
    matrices = [_on(_as_matrix(v), device) for v in vectors]
    tau, rule, method, svd = settings.tau, parse_rank(settings.rank), settings.method, settings.svd
    check_pool(matrices, tau, name=name)
    bases = [basis_fn(m, rule, svd=svd) for m in matrices]
    n = matrices[0].shape[0]
    report: dict[str, Any] = {"name": name, "shape": _shape(shape), "action": "decompose",
                              "ranks": [b.rank for b in bases], "row_dim": n,
                              "near_identity": max(b.rank for b in bases) >= NEAR_IDENTITY * n and n > 1}
    layer = LayerResult(name, "decompose", report=report)
    if settings.mode == "joint":
        d = engine_modes.joint(matrices, tau, rule, method, svd, bases=bases)
        layer.shared = [_restore(s, shape) for s in d.shared]
        layer.unique = [_restore(u, shape) for u in d.unique]
        layer.merged_shared = _restore(d.merged_shared, shape)
        energy = d.shared_energy()
        report.update(shared_dim=d.shared_dim, shared_energy=sum(energy) / len(energy),
                      unique_energy=1 - sum(energy) / len(energy))
    elif settings.mode == "pairwise":
        # matrices keep each pair's part as rank-d factors (ModelDecomposition.pairwise_dense forms them); conv
        # and other reshaped weights are restored dense to their shape
        r = engine_modes.pairwise_result(matrices, tau, rule, method, svd, bases=bases, factored=len(shape) == 2)
        layer.pairwise_shared = {pair: _restore(v, shape) for pair, v in r.merged_shared.items()}
        dims = list(r.shared_dims.values())
        report.update(shared_dim=sum(dims) / len(dims), shared_dim_max=max(dims))
    else:
        others = [m for i, m in enumerate(matrices) if i != target]
        other_bases = [b for i, b in enumerate(bases) if i != target]
        r = engine_modes.iterative_result(matrices[target], others, tau, rule, method, svd, other_bases=other_bases,
                                          basis_fn=basis_fn, target_basis=bases[target])
        layer.unique_target = _restore(r.unique, shape)
        unique_energy = _energy_ratio(r.unique, matrices[target])
        report.update(shared_dim=sum(r.removed_dims), unique_energy=unique_energy, shared_energy=1 - unique_energy)
    if settings.chance_draws:  # what random subspaces of these ranks share, in shared_dim's units
        report.update(chance_dim=chance_shared_dim(n, report["ranks"], tau, settings.mode, draws=settings.chance_draws,
                                                   target=target, method=method, device=device),
                      chance_draws=settings.chance_draws)
    return layer


def _policy_layer(name: str, vectors: list[TaskVector], action: str, mode: str, target: int) -> LayerResult:
    shape = tuple(vectors[0].shape)
    report = {"name": name, "shape": _shape(shape), "action": action}
    layer = LayerResult(name, action, report=report)
    if action == "exclude":
        return layer
    dense = [v.dense() if isinstance(v, LoRAFactors) else v for v in vectors]
    mean = torch.stack(dense).mean(0) if action == "average" else torch.zeros_like(dense[0])
    if mode == "joint":
        layer.shared = [mean.clone() for _ in dense]
        layer.unique = [v - mean for v in dense]
        layer.merged_shared = mean
    elif mode == "pairwise":
        layer.pairwise_shared = {
            (i, j): ((dense[i] + dense[j]) / 2 if action == "average" else torch.zeros_like(dense[0]))
            for i, j in combinations(range(len(dense)), 2)
        }
    else:
        layer.unique_target = dense[target] - mean
    return layer


def _finish(layer: LayerResult, dtype: torch.dtype | None, device: str | None, home: torch.device) -> LayerResult:
    """Components in ``dtype`` and, when the engine ran on ``device``, back on ``home`` (where the vectors were)."""
    if dtype is None and device is None:
        return layer

    def move(v: TaskVector) -> TaskVector:
        if isinstance(v, LoRAFactors):
            return LoRAFactors(move(v.B), move(v.A), v.scale)
        return v.to(dtype=dtype or v.dtype, device=home if device is not None else v.device)

    for kind in ("shared", "unique"):
        if getattr(layer, kind) is not None:
            setattr(layer, kind, [move(v) for v in getattr(layer, kind)])
    if layer.pairwise_shared is not None:
        layer.pairwise_shared = {pair: move(v) for pair, v in layer.pairwise_shared.items()}
    for kind in ("merged_shared", "unique_target"):
        if getattr(layer, kind) is not None:
            setattr(layer, kind, move(getattr(layer, kind)))
    return layer


def _energy_ratio(after: TaskVector, before: TaskVector) -> float:
    b = frobenius_norm(before)
    return (frobenius_norm(after) / b) ** 2 if b > 0 else 0.0


def _is_zero(v: TaskVector) -> bool:
    if isinstance(v, LoRAFactors):
        return not (bool(v.B.any()) and bool(v.A.any()))
    return not bool(v.any())


def _engine_device(device: str | None, settings: DecompositionSettings) -> str | None:
    """Where the engine runs: the ``device`` argument, else ``decomposition.device``; None: where the vectors are."""
    return device if device is not None else settings.device


def _device_of(v: TaskVector) -> torch.device:
    return v.B.device if isinstance(v, LoRAFactors) else v.device


def _on(v: TaskVector, device: str | None) -> TaskVector:
    if device is None:
        return v
    if isinstance(v, LoRAFactors):
        return LoRAFactors(v.B.to(device), v.A.to(device), v.scale)
    return v.to(device)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _as_matrix(v: TaskVector) -> TaskVector:
    """Conv and higher-rank weights as (out, in * k_h * k_w ...) matrices (METHOD.md)."""
    if isinstance(v, LoRAFactors) or v.dim() == 2:
        return v
    return v.reshape(v.shape[0], -1)


def _restore(v: TaskVector, shape: tuple[int, ...]) -> TaskVector:
    if isinstance(v, LoRAFactors) or tuple(v.shape) == shape:
        return v
    return v.reshape(shape)
