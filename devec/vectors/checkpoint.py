"""Lazy, safe access to checkpoints: safetensors files and shards, HF directories, weights-only pickles, dicts."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

SAFETENSORS_INDEXES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
PICKLE_INDEXES = ("pytorch_model.bin.index.json",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class Checkpoint:
    """Named tensors read on demand: ``keys()``, ``get(name)``, ``shape(name)``; ``source`` names it in errors."""

    source: str = "<state dict>"

    def keys(self) -> list[str]:
        raise NotImplementedError

    def get(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.get(name).shape)

    def __contains__(self, name: str) -> bool:
        return name in set(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


class StateDictCheckpoint(Checkpoint):
    """An in-memory ``{name: tensor}``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], source: str = "<state dict>") -> None:
        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ValueError(f"{source}: entries {bad[:5]} are not tensors; pass a state dict of tensors")
        self._tensors = dict(tensors)
        self.source = source

    def keys(self) -> list[str]:
        return list(self._tensors)

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)


class SafetensorsCheckpoint(Checkpoint):
    """One or more safetensors files (shards); each tensor is read from disk when asked for.

    Without ``weight_map`` no tensor may be in two files; with it (from an index) each tensor comes from its file.
    """

    def __init__(self, files: list[Path], source: str, weight_map: Mapping[str, Path] | None = None) -> None:
        self.source = source
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        headers = {f: read_safetensors_header(f) for f in files}
        if weight_map is None:
            _refuse_duplicates(headers, source)
        else:
            _check_weight_map(weight_map, headers, source)
        for f, shapes in headers.items():
            for k, shape in shapes.items():
                if weight_map is None or weight_map[k] == f:
                    self._where[k] = f
                    self._shapes[k] = shape

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        path = self._where[name]
        try:
            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - SafetensorError and friends: name the file
            raise ValueError(_corrupt_message(path, err)) from None


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from a safetensors file's header; a truncated or corrupt file is a ValueError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - SafetensorError is not importable as a stable name
        raise ValueError(_corrupt_message(path, err)) from None


def _corrupt_message(path: Path, err: Exception) -> str:
    return (f"{path}: not a readable safetensors file, it is truncated or corrupt "
            f"({type(err).__name__}: {_first_line(err)}); re-download or re-convert it")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else ""


def _refuse_duplicates(headers: Mapping[Path, Mapping[str, tuple[int, ...]]], source: str) -> None:
    """Two files holding the same tensor, with no index to choose: an error naming both files and the keys."""
    owner: dict[str, Path] = {}
    for f, shapes in headers.items():
        for k in shapes:
            if k in owner:
                first = owner[k]
                shared = [key for key in shapes if owner.get(key) == first]
                raise ValueError(
                    f"{source}: {first.name} and {f.name} both hold {len(shared)} of the same tensors "
                    f"(e.g. {shared[:3]}), so it is ambiguous which to use. Point at one file "
                    f"(e.g. {first}) or add a model.safetensors.index.json whose weight_map names "
                    f"the file for each tensor"
                )
            owner[k] = f


def _check_weight_map(weight_map: Mapping[str, Path], headers: Mapping[Path, Mapping], source: str) -> None:
    """Every tensor an index names must be in the shard it names."""
    for k, f in weight_map.items():
        if k not in headers[f]:
            raise ValueError(f"{source}: the index says tensor '{k}' is in {f.name}, which does not hold it; "
                             f"the index and shards do not match, re-download them")


def open_checkpoint(source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint) -> Checkpoint:
    """Open a checkpoint lazily; safetensors first, pickles only through ``torch.load(weights_only=True)``."""
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, Mapping):
        return StateDictCheckpoint(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _open_directory(path)
    if path.suffix == ".safetensors":
        return SafetensorsCheckpoint([path], str(path))
    if path.suffix in PICKLE_SUFFIXES:
        return StateDictCheckpoint(load_pickle_state_dict(path), str(path))
    raise ValueError(f"{path}: unknown checkpoint format (use .safetensors, an HF directory, or a .pt/.bin state dict)")


def load_weights_only(path: Path) -> object:
    """``torch.load(weights_only=True)`` on CPU; memory-mapped for zip files, plain reads for the legacy format."""
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch's own test; mmap supports only the zip format
    return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict through ``torch.load(weights_only=True)``; anything else is refused."""
    try:
        obj = load_weights_only(path)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise ValueError(_unreadable_pickle(path, err)) from None
        raise ValueError(
            f"{path}: refused to load this pickle: it does not load with torch.load(weights_only=True) "
            f"(it holds Python objects, e.g. a whole model). Convert it once to safetensors "
            f"(devec-convert {path}) and point devec "
            f"at the .safetensors file. ({type(err).__name__}: {_first_line(err)})"
        ) from None
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated zip, bad magic number, EOF: all mean a damaged file
        raise ValueError(_unreadable_pickle(path, err)) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    return tensors


def _unreadable_pickle(path: Path, err: Exception) -> str:
    return (f"{path}: cannot be read as a torch checkpoint, it is truncated or corrupt "
            f"({type(err).__name__}: {_first_line(err)}); re-download or re-save it")


def _open_directory(path: Path) -> Checkpoint:
    for index in SAFETENSORS_INDEXES:
        if (path / index).exists():
            weight_map = read_index(path / index)
            return SafetensorsCheckpoint(sorted(set(weight_map.values())), str(path), weight_map)
    files = sorted(path.glob("*.safetensors"))
    if files:
        return SafetensorsCheckpoint(files, str(path))
    for index in PICKLE_INDEXES:
        if (path / index).exists():
            weight_map = read_index(path / index)
            merged: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                tensors = load_pickle_state_dict(shard)
                merged.update({k: v for k, v in tensors.items() if weight_map.get(k) == shard})
            return StateDictCheckpoint(merged, str(path))
    pickles = [p for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if len(pickles) == 1:
        return StateDictCheckpoint(load_pickle_state_dict(pickles[0]), str(pickles[0]))
    raise ValueError(f"{path}: no model.safetensors, *.safetensors shards or single pytorch_model.bin found")


def read_index(index: Path) -> dict[str, Path]:
    """A sharded checkpoint's index: ``{tensor name: shard path}``; bad JSON or a missing shard names the file."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, Mapping) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not a {tensor name: file name} object")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index}: not a valid shard index ({type(err).__name__}: {_first_line(err)}); "
                         f"it needs a JSON object with a \"weight_map\" of tensor name -> shard file; "
                         f"re-download it") from None
    shards = {name: index.parent / name for name in set(weight_map.values())}
    missing = sorted(name for name, shard in shards.items() if not shard.is_file())
    if missing:
        raise FileNotFoundError(f"{index}: names shard(s) {missing[:3]} that are not in {index.parent}; "
                                f"download the missing shard(s) or fix the index")
    return {k: shards[v] for k, v in weight_map.items()}
