"""Cheap content fingerprints of checkpoints, for store keys: no absolute paths, no modification times.

A file's fingerprint is the sha256 of its size, its safetensors header (names, dtypes, shapes, offsets) and
evenly spaced sampled blocks, so it reads about 100 KiB whatever the file's size. Moving or copying a checkpoint
keeps it; rebuilding, re-saving or truncating one changes it. A change confined to bytes between the sampled
blocks is not seen: that is the price of not reading 14 GB per 7B checkpoint on every run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from devec.engine import LoRAFactors

BLOCK = 4096
BLOCKS = 16
WEIGHT_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".ckpt", ".model")


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's size, safetensors header (if any) and ``BLOCKS`` sampled blocks of ``BLOCK`` bytes."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"size={size}|".encode())
    with open(path, "rb") as f:
        if path.suffix == ".safetensors" and size >= 8:
            n = int.from_bytes(f.read(8), "little")
            h.update(f.read(min(n, size - 8)))
        for i in range(BLOCKS):
            f.seek(max(0, (size - BLOCK) * i // max(1, BLOCKS - 1)))
            h.update(f.read(BLOCK))
    return h.hexdigest()


def path_fingerprint(path: str | os.PathLike) -> Any:
    """A file's fingerprint, or ``[[name, fingerprint], ...]`` of a directory's weight and config files."""
    path = Path(path)
    if path.is_file():
        return file_fingerprint(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: cannot fingerprint it for the cache key")
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    return [[f.name, file_fingerprint(f)] for f in files]


def tensors_fingerprint(tensors: Mapping[str, Any]) -> str:
    """sha256 of named tensors (or LoRA factors): name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        parts = (value.B, value.A) if isinstance(value, LoRAFactors) else (value,)
        if isinstance(value, LoRAFactors):
            h.update(f"{name}|scale={value.scale!r}|".encode())
        for t in parts:
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def checkpoint_fingerprint(checkpoint: Any) -> Any:
    """The fingerprint of an opened checkpoint: of its files when it has a path, else of its tensors."""
    source = getattr(checkpoint, "source", None)
    if source is not None and Path(str(source)).exists():
        return path_fingerprint(source)
    return tensors_fingerprint({k: checkpoint.get(k) for k in checkpoint.keys()})
