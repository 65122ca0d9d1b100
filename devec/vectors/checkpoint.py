"""Lazy, safe access to checkpoints: safetensors files and shards, HF directories, weights-only pickles, dicts."""

from __future__ import annotations

import json
import os
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
    """One or more safetensors files (shards); each tensor is read from disk when asked for."""

    def __init__(self, files: list[Path], source: str) -> None:
        from safetensors import safe_open

        self.source = source
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as handle:
                for k in handle.keys():
                    self._where[k] = f
                    self._shapes[k] = tuple(handle.get_slice(k).get_shape())

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as handle:
            return handle.get_tensor(name)


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


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict through ``torch.load(weights_only=True)``; anything else is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means refusal
        raise ValueError(
            f"{path}: refused to load this pickle: it does not load with torch.load(weights_only=True) "
            f"(it holds Python objects, e.g. a whole model). Convert it once in a trusted environment to "
            f"safetensors (python experiments/convert_task_vectors.py) and point devec at the .safetensors file. "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    return tensors


def _open_directory(path: Path) -> Checkpoint:
    for index in SAFETENSORS_INDEXES:
        if (path / index).exists():
            shards = sorted({path / f for f in json.loads((path / index).read_text())["weight_map"].values()})
            return SafetensorsCheckpoint(shards, str(path))
    files = sorted(path.glob("*.safetensors"))
    if files:
        return SafetensorsCheckpoint(files, str(path))
    for index in PICKLE_INDEXES:
        if (path / index).exists():
            shards = sorted({path / f for f in json.loads((path / index).read_text())["weight_map"].values()})
            merged: dict[str, torch.Tensor] = {}
            for shard in shards:
                merged.update(load_pickle_state_dict(shard))
            return StateDictCheckpoint(merged, str(path))
    pickles = [p for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if len(pickles) == 1:
        return StateDictCheckpoint(load_pickle_state_dict(pickles[0]), str(pickles[0]))
    raise ValueError(f"{path}: no model.safetensors, *.safetensors shards or single pytorch_model.bin found")
