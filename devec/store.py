"""One rule for every cache and store: keyed by content and code, checksummed, atomic, healed when damaged.

- **Keys** hold what an entry is built from (a config block, tensor bytes) and :func:`code_version` of the
  modules that build it, never absolute paths: a code change rebuilds, moving the cache folder does not.
- **Files** (:func:`save_entry`, :func:`load_entry`) are safetensors whose one checksum covers the tensors and
  every metadata field read back. A file in a foreign format (a diffusers LoRA) is sealed by a sidecar that
  holds its sha256 (:func:`seal`, :func:`sealed`).
- **Directories** (:func:`built_dir`) are built in a temporary folder, get a manifest with the sha256 of every
  file written last, and are renamed into place; :func:`verified_dir` checks every file against it.
- **Damage** (a flipped bit, a truncated or deleted file, an edited field) is logged as one warning naming the
  file and what is wrong, and the entry is rebuilt; it is never trusted and never a traceback.
- **A read-only cache** is read and never written (one warning); a cache folder that cannot be created fails
  before any work with a hint (:func:`check_cache_dir`). Folders get the usual permissions (umask).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from devec import io

log = logging.getLogger(__name__)

CHECKSUM = "devec_sha256"
META = "devec_meta"
MANIFEST = "devec_manifest.json"
SEAL_SUFFIX = ".devec.json"
UNREADABLE = "is missing or unreadable"
HINT = ("set paths.cache_dir (or the DEVEC_CACHE environment variable) to a folder you can write, "
        "or decomposition.cache=false to skip the SVD cache")

_read_only_warned: set[Path] = set()
_checked_roots: list[Path] = []


# ---------------------------------------------------------------- keys

def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (keys sorted): the same content gives the same digest anywhere."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def key(obj: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-able object: a cache entry's name."""
    return digest(obj)[:length]


def config_key(obj: Any) -> str:
    """12 hex digits of a JSON-able config block (and code version): the cache folder or file of what it builds."""
    return key(obj, 12)


@functools.cache
def code_version(*modules: str) -> str:
    """sha256 (16 hex digits) of the named modules' sources: a change to what builds an entry invalidates it."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"code_version: no module {name!r}")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of named tensors (name, dtype, shape and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# ---------------------------------------------------------------- where a cache may write

def check_cache_dir(root: str | os.PathLike) -> Path:
    """Create the cache folder, or fail now with a hint when it cannot be; warn once when it can only be read."""
    root = Path(root)
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        reason = "is a file" if root.exists() else "cannot be created"
        raise ValueError(f"cache folder {root} {reason}: set paths.cache_dir (or the DEVEC_CACHE environment "
                         f"variable) to a folder you can write; decomposition.cache=false turns off only the SVD "
                         f"cache, runs also keep finished units and built models there")
    if root not in _checked_roots:
        _checked_roots.append(root)
    writable(root)
    return root


def writable(path: str | os.PathLike) -> bool:
    """True when files can be stored in ``path`` (created as needed); False, with one warning, on a read-only cache."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError as err:
        _warn_read_only(path, err)
        return False


def _warn_read_only(path: Path, err: OSError) -> None:
    root = next((r for r in _checked_roots if path == r or r in path.parents), path)
    if root in _read_only_warned or any(p in _read_only_warned for p in root.parents):
        return
    _read_only_warned.add(root)
    log.warning("cache %s is read-only (%s): entries found there are used, new ones are computed but not "
                "stored; %s", root, err.strerror or err, HINT)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` across processes (filelock); none on a read-only cache."""
    from filelock import FileLock

    path = Path(path)
    if not writable(path.parent):
        yield
        return
    with FileLock(str(path.parent / f"{path.name}.lock")):
        yield


# ---------------------------------------------------------------- files: tensors + metadata, one checksum

def save_entry(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path | None:
    """Write tensors and JSON-able ``meta`` atomically, checksummed together; None when the cache is read-only."""
    path = Path(path)
    if not writable(path.parent):
        return None
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    text = json.dumps(dict(meta), sort_keys=True, default=io.json_default)
    return io.save_safetensors(path, clean, metadata={META: text, CHECKSUM: _entry_sum(clean, text)})


def load_entry(path: str | os.PathLike, expect: Mapping[str, Any] | None = None, warn: bool = True
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Tensors and metadata of an intact entry whose metadata holds ``expect``; None (rebuild it) otherwise.

    A missing file is a plain miss; a damaged or foreign one is also logged as one warning (unless ``warn`` is off).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        tensors, meta, problem = _read_entry(path, expect or {})
    except Exception as err:  # noqa: BLE001 - truncated, empty or not safetensors at all: rebuild it
        tensors, meta, problem = {}, {}, f"unreadable ({type(err).__name__}: {_first_line(err)})"
    if problem is None:
        return tensors, meta
    if warn:
        log.warning("cache entry %s is damaged (%s): recomputing it", path, problem)
    return None


def _read_entry(path: Path, expect: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if META not in raw or CHECKSUM not in raw:
        return tensors, {}, "no devec checksum: written by other code"
    if raw[CHECKSUM] != _entry_sum(tensors, raw[META]):
        return tensors, {}, "checksum mismatch: its data or metadata changed after it was written"
    meta = json.loads(raw[META])
    wrong = [k for k, v in expect.items() if meta.get(k) != v]
    if wrong:
        return tensors, meta, f"written for another {', '.join(wrong)}"
    return tensors, meta, None


def _entry_sum(tensors: Mapping[str, torch.Tensor], meta_text: str) -> str:
    return hashlib.sha256(f"{tensors_digest(tensors)}|{meta_text}".encode()).hexdigest()


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]


# ---------------------------------------------------------------- files in foreign formats: a sealing sidecar

def seal(path: str | os.PathLike, meta: Mapping[str, Any]) -> Path | None:
    """Record ``path``'s size, sha256 and ``meta`` in a sidecar written after it; None on a read-only cache."""
    path = Path(path)
    if not writable(path.parent):
        return None
    record = {"size": path.stat().st_size, "sha256": io.sha256_file(path), "meta": _plain(meta)}
    return io.write_json(_seal_path(path), {**record, CHECKSUM: digest(record)})


def sealed(path: str | os.PathLike, meta: Mapping[str, Any]) -> bool:
    """True when ``path`` is intact and was sealed for ``meta``; a damaged one is logged (one warning)."""
    path = Path(path)
    side = _seal_path(path)
    if not path.exists() and not side.exists():
        return False
    problem = _seal_problem(path, side, _plain(meta))
    if problem:
        log.warning("cache entry %s is damaged (%s): recomputing it", path, problem)
    return problem is None


def _seal_problem(path: Path, side: Path, meta: Any) -> str | None:
    if not path.exists():
        return "the file is missing, its checksum sidecar is left"
    record = _read_record(side)
    if isinstance(record, str):
        return f"its checksum sidecar {side.name} {record}"
    if record.get("meta") != meta:
        return "written for another configuration or code version"
    if record.get("size") != path.stat().st_size or record.get("sha256") != io.sha256_file(path):
        return "checksum mismatch: the file changed after it was written"
    return None


def _read_record(path: Path) -> dict[str, Any] | str:
    """The JSON record of a sidecar or manifest, its own checksum verified; otherwise what is wrong with it."""
    try:
        record = json.loads(path.read_text())
        stored = record.pop(CHECKSUM)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return UNREADABLE
    return record if stored == digest(record) else "was edited"


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + SEAL_SUFFIX)


def _plain(meta: Mapping[str, Any]) -> Any:
    """``meta`` as plain JSON values: what a sidecar or manifest stores and compares."""
    return json.loads(json.dumps(dict(meta), sort_keys=True, default=str))


# ---------------------------------------------------------------- directories: a manifest written last

def built_dir(path: str | os.PathLike, meta: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
    """``path`` when it holds an intact build for ``meta``; otherwise ``build(tmp)``, manifest, rename into place.

    On a read-only cache the build goes to a temporary folder that lives as long as this process, and is returned.
    """
    path = Path(path)
    if verified_dir(path, meta):
        return path
    with locked(path):
        if verified_dir(path, meta, warn=False):  # another process built it while this one waited
            return path
        keep = writable(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent if keep else None))
        try:
            build(tmp)
            write_manifest(tmp, meta)
            io.normal_permissions(tmp)
            if not keep:
                atexit.register(shutil.rmtree, tmp, True)
                return tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            if keep and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_manifest(root: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Record the size and sha256 of every file under ``root``, and ``meta``, in ``root/devec_manifest.json``."""
    root = Path(root)
    files = {str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": io.sha256_file(p)}
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}
    record = {"meta": _plain(meta), "files": files}
    return io.write_json(root / MANIFEST, {**record, CHECKSUM: digest(record)})


def verified_dir(path: str | os.PathLike, meta: Mapping[str, Any], warn: bool = True) -> bool:
    """True when ``path`` holds a complete build for ``meta`` (every file of its manifest intact)."""
    path = Path(path)
    if not path.exists():
        return False
    problem = _dir_problem(path, _plain(meta))
    if problem and warn:
        log.warning("cache folder %s is damaged (%s): rebuilding it", path, problem)
    return problem is None


def _dir_problem(path: Path, meta: Any) -> str | None:
    record = _read_record(path / MANIFEST)
    if record == UNREADABLE:
        return f"no readable {MANIFEST}: an interrupted build, or one by older code"
    if isinstance(record, str):
        return f"its {MANIFEST} {record}"
    if record.get("meta") != meta:
        return "built for another configuration or code version"
    for name, want in record.get("files", {}).items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["size"] or io.sha256_file(f) != want["sha256"]:
            return f"{name} changed after it was written (checksum mismatch)"
    return None
