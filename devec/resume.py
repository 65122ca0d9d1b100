"""Resumable runs: finished units (a layer, a coefficient step, an evaluation task) are stored as they finish.

A unit is stored atomically (temporary file, fsync, rename) with its sha256 recorded in a manifest that is
itself written atomically, and only after the unit's file is complete. A unit counts as done only when the
manifest names it and its file's checksum matches, so a run killed at any point (even mid-write) restarts
from its last finished unit and never reads a truncated file. The store of a run is keyed by a hash of its
resolved config without the output-only keys and by devec's code, so re-running the same command with the
same code resumes it, and a changed config or code starts afresh. Each manifest record carries its own checksum
(an edited record is not trusted), a damaged unit is logged once and recomputed, a damaged manifest starts the
run afresh with a warning, and a read-only cache keeps new units in memory for this run only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from devec import io, store

log = logging.getLogger(__name__)

OUTPUT_ONLY_KEYS = ("paths", "logger", "hydra", "tags", "resume")
"""Config keys that change where and how a run reports, never what it computes."""

MANIFEST = "manifest.json"


class UnitStore:
    """Finished units of one run: ``done(unit)``, ``load(unit)``, ``save(unit, obj)``; atomic and checksummed."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._verified: set[str] = set()
        self._warned: set[str] = set()
        self._memory: dict[str, Any] = {}  # units of this run on a read-only cache
        self._cached: tuple[tuple[int, int, int], dict[str, dict[str, Any]]] | None = None

    @classmethod
    def for_config(cls, cache_dir: str | os.PathLike, cfg: Any, exclude: Iterable[str] = OUTPUT_ONLY_KEYS) -> UnitStore:
        """The store of the run that ``cfg`` describes: ``<cache_dir>/runs/<config hash>``."""
        root = Path(cache_dir) / "runs" / config_hash(cfg, exclude)
        store.writable(root.parent)  # a read-only cache: say so once, before the first unit
        return cls(root)

    def done(self, unit: str) -> bool:
        """True when ``unit`` was finished: named in the manifest, its file complete and its checksum right."""
        if unit in self._verified or unit in self._memory:
            return True
        record = self._manifest().get(unit)
        if record is None:
            return False
        problem = _record_problem(self.root, unit, record)
        if problem is not None:
            if unit not in self._warned:
                self._warned.add(unit)
                log.warning("finished unit %r in %s is damaged (%s): computing it again", unit, self.root, problem)
            return False
        self._verified.add(unit)
        return True

    def load(self, unit: str) -> Any:
        """The object saved for ``unit``; raises KeyError when the unit is not (or no longer validly) stored."""
        if not self.done(unit):
            raise KeyError(f"unit {unit!r} is not finished in {self.root}")
        if unit in self._memory:
            return _roundtrip(self._memory[unit])
        record = self._manifest()[unit]
        path = self.root / record["file"]
        if record["kind"] == "json":
            return json.loads(path.read_text())["value"]
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            rest = json.loads((f.metadata() or {}).get("json", "{}"))
        return {**rest, **tensors}

    def save(self, unit: str, obj: Any) -> Any:
        """Store ``obj`` (JSON-able, or a dict whose top-level tensors go to safetensors) as ``unit``; returns it."""
        if not store.writable(self.root / "units"):
            self._memory[unit] = obj
            return obj
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
        stem = _file_stem(unit)
        if tensors:
            rest = {k: v for k, v in obj.items() if k not in tensors}
            path = io.save_safetensors(self.root / "units" / f"{stem}.safetensors", tensors,
                                       metadata={"unit": unit, "json": json.dumps(rest, default=io.json_default)})
            kind = "tensors"
        else:
            path = io.write_json(self.root / "units" / f"{stem}.json", {"unit": unit, "value": obj})
            kind = "json"
        record = {"file": path.relative_to(self.root).as_posix(), "kind": kind, "size": path.stat().st_size,
                  "sha256": io.sha256_file(path)}
        record["check"] = _record_check(unit, record)
        self._warned.discard(unit)
        with store.locked(self.root / MANIFEST):
            manifest = self._manifest()
            manifest[unit] = record
            io.write_json(self.root / MANIFEST, manifest)
        self._verified.add(unit)
        return obj

    def units(self) -> list[str]:
        """Names of the units in the manifest (finished or not yet verified)."""
        return list(self._manifest())

    def _manifest(self) -> dict[str, dict[str, Any]]:
        path = self.root / MANIFEST
        if not path.is_file():
            return {}
        stat = path.stat()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._cached is not None and self._cached[0] == stamp:
            return dict(self._cached[1])
        try:
            manifest = json.loads(path.read_text())
            if not isinstance(manifest, dict) or not all(isinstance(r, dict) for r in manifest.values()):
                raise ValueError("not a mapping of unit records")
        except (OSError, ValueError) as err:  # written atomically, so this is outside damage: say so, start afresh
            manifest = {}
            if MANIFEST not in self._warned:
                self._warned.add(MANIFEST)
                log.warning("%s is damaged (%s): every unit of this run is computed again", path,
                            str(err).splitlines()[0][:120])
        self._cached = (stamp, manifest)
        return dict(manifest)


def _record_check(unit: str, record: Mapping[str, Any]) -> str:
    """sha256 of a manifest record and its unit name: an edited record is not trusted."""
    return store.digest({"unit": unit, **{k: v for k, v in record.items() if k != "check"}})


def _record_problem(root: Path, unit: str, record: Mapping[str, Any]) -> str | None:
    """What is wrong with a finished unit's record or file; None when it is intact."""
    if record.get("check") != _record_check(unit, record):
        return f"its record in {MANIFEST} was edited or written by older code"
    path = root / record["file"]
    if not path.is_file():
        return f"{record['file']} is missing"
    if path.stat().st_size != record["size"] or io.sha256_file(path) != record["sha256"]:
        return f"{record['file']} changed after it was written (checksum mismatch)"
    return None


def _roundtrip(obj: Any) -> Any:
    """``obj`` as it would come back from the store (JSON values; top-level tensors kept)."""
    if isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        tensors = {k: v.detach().to("cpu").clone() for k, v in obj.items() if isinstance(v, torch.Tensor)}
        rest = json.loads(json.dumps({k: v for k, v in obj.items() if k not in tensors}, default=io.json_default))
        return {**rest, **tensors}
    return json.loads(json.dumps(obj, default=io.json_default))


def resumable(units: Iterable[str], store: UnitStore, fn: Callable[[str], Any],
              progress: Callable[..., Iterable] | None = None, desc: str = "units") -> dict[str, Any]:
    """``{unit: fn(unit)}`` for every unit, loading finished ones from ``store`` and saving each new one.

    Every value is returned as read back from the store, so a fresh and a resumed run see the same types
    (a tuple comes back as a list, dict keys as strings).
    """
    units = list(units)
    todo = units if progress is None else progress(units, desc=desc)
    out: dict[str, Any] = {}
    for unit in todo:
        if not store.done(unit):
            store.save(unit, fn(unit))
        out[unit] = store.load(unit)
    return out


def config_hash(cfg: Any, exclude: Iterable[str] = OUTPUT_ONLY_KEYS) -> str:
    """A stable sha256 (16 hex digits) of the resolved config without output-only keys, and of devec's code."""
    container = resolved_config(cfg)
    for key in exclude:
        container.pop(key, None)
    text = json.dumps({"code": code_fingerprint(), "config": container}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """sha256 of devec's Python sources: units stored by other code are never taken as finished."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def resolved_config(cfg: Any) -> dict[str, Any]:
    """A plain dict of ``cfg`` with interpolations resolved; a value that cannot be resolved stays as written."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        return json.loads(json.dumps(cfg, default=str))

    def walk(node: Any) -> Any:
        if isinstance(node, DictConfig):
            return {str(k): walk(_child(node, k)) for k in node.keys()}
        if isinstance(node, ListConfig):
            return [walk(_child(node, i)) for i in range(len(node))]
        return node

    def _child(node: Any, key: Any) -> Any:
        try:
            return node[key]
        except Exception:  # e.g. ${hydra:...} outside a Hydra app, or a missing value
            return str(node._get_node(key)._value())

    return walk(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))


def _file_stem(unit: str) -> str:
    """A readable, unique file name for a unit name."""
    readable = re.sub(r"[^A-Za-z0-9._=-]+", "_", unit)[:80]
    return f"{readable}-{hashlib.sha256(unit.encode()).hexdigest()[:12]}"
