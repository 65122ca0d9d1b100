"""Lazy task-vector sources, one parameter at a time: full checkpoints (safetensors shards) and DoRA adapters.

A source never loads a whole model: ``delta(name, w_pre)`` reads one tensor (``safetensors.safe_open``) and
returns that parameter's task vector ``W_ft - W_pre``, or ``None`` when the fine-tune left it untouched. Both are
:class:`devec.vectors.model.DeltaSource` members of a :class:`devec.vectors.SourcePool`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch

from devec.vectors import open_checkpoint
from devec.vectors.fingerprint import path_fingerprint

LORA_PREFIX = "base_model.model."
log = logging.getLogger(__name__)


class FullSource:
    """A fully fine-tuned checkpoint: ``delta(name) = W_ft[name] - W_pre[name]``."""

    kind = "full"

    def __init__(self, path: str | Path, name: str = "") -> None:
        self.path = Path(path)
        self.ckpt = open_checkpoint(path)
        self.name = name or Path(path).name
        self._keys = set(self.ckpt.keys())

    def fingerprint(self) -> dict[str, Any]:
        """The checkpoint's content (sampled; no path), for the vector store's key."""
        return {"kind": self.kind, "files": path_fingerprint(self.path)}

    def delta(self, param: str, w_pre: torch.Tensor) -> torch.Tensor | None:
        if param not in self._keys:
            return None
        if tuple(self.ckpt.shape(param)) != tuple(w_pre.shape):
            log.warning("%s: %s has shape %s, the pre-trained model %s (e.g. an extended vocabulary); this pool "
                        "model is left out for that parameter", self.name, param, self.ckpt.shape(param),
                        tuple(w_pre.shape))
            return None
        w = self.ckpt.get(param)
        return w.to(torch.float32) - w_pre.to(torch.float32)


def dora_delta(w_pre: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, magnitude: torch.Tensor,
               scaling: float) -> torch.Tensor:
    """Exact DoRA merge minus the base weight: ``m / ||W + s B A||_row * (W + s B A) - W`` (float64 inside)."""
    w = w_pre.double()
    combined = w + scaling * (lora_b.double() @ lora_a.double())
    norm = torch.linalg.norm(combined, dim=1)
    merged = (magnitude.double() / norm).unsqueeze(1) * combined
    return (merged - w).to(torch.float32)


class DoRASource:
    """A peft LoRA/DoRA adapter directory; its task vector is merged exactly, one parameter at a time."""

    kind = "dora"

    def __init__(self, path: str | Path, name: str = "") -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        cfg_path = self.path / "adapter_config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path} not found: a DoRA pool entry must be a peft adapter directory")
        self.config = json.loads(cfg_path.read_text())
        if self.config.get("rank_pattern") or self.config.get("alpha_pattern"):
            raise ValueError(f"{self.path}: adapters with rank_pattern/alpha_pattern are not supported; "
                             "merge them with peft (merge_and_unload) and use the merged checkpoint instead")
        if self.config.get("fan_in_fan_out"):
            raise ValueError(f"{self.path}: fan_in_fan_out adapters (GPT-2 Conv1D) are not LLaMA adapters")
        r, alpha = int(self.config["r"]), float(self.config["lora_alpha"])
        self.scaling = alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r
        self.use_dora = bool(self.config.get("use_dora"))
        self.ckpt = open_checkpoint(self.path / "adapter_model.safetensors")
        self._keys = set(self.ckpt.keys())
        self._modules = {}
        for key in self.ckpt.keys():
            m = re.match(r"(.*)\.lora_A(?:\.[^.]+)?\.weight$", key)
            if m:
                module = m.group(1)
                self._modules[module.removeprefix(LORA_PREFIX) + ".weight"] = module

    def fingerprint(self) -> dict[str, Any]:
        """The adapter's content (config and weights, sampled; no path), for the vector store's key."""
        return {"kind": self.kind, "files": path_fingerprint(self.path)}

    def params(self) -> list[str]:
        """Base-model parameter names this adapter changes."""
        return list(self._modules)

    def factors(self, param: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """(lora_A, lora_B, magnitude or None) of one parameter, or None if the adapter does not touch it."""
        module = self._modules.get(param)
        if module is None:
            return None
        a = self._first(f"{module}.lora_A.weight", f"{module}.lora_A.default.weight")
        b = self._first(f"{module}.lora_B.weight", f"{module}.lora_B.default.weight")
        mag = None
        if self.use_dora:
            mag = self._first(f"{module}.lora_magnitude_vector", f"{module}.lora_magnitude_vector.default.weight",
                              f"{module}.lora_magnitude_vector.weight")
        return a, b, mag

    def delta(self, param: str, w_pre: torch.Tensor) -> torch.Tensor | None:
        f = self.factors(param)
        if f is None:
            return None
        a, b, mag = f
        if mag is None:
            return (self.scaling * (b.double() @ a.double())).to(torch.float32)
        return dora_delta(w_pre, a, b, mag, self.scaling)

    def _first(self, *names: str) -> torch.Tensor:
        for n in names:
            if n in self._keys:
                return self.ckpt.get(n)
        raise KeyError(f"{self.path}: none of {names} in adapter_model.safetensors")


def open_source(path: str | Path, kind: str = "auto", name: str = "") -> FullSource | DoRASource:
    """A task-vector source for a pool entry: ``full`` checkpoint, ``dora`` adapter, or ``auto`` by its files."""
    path = Path(path)
    if kind == "auto":
        kind = "dora" if (path / "adapter_config.json").exists() else "full"
    if kind in ("dora", "lora"):
        return DoRASource(path, name)
    if kind == "full":
        return FullSource(path, name)
    raise ValueError(f"pool entry {name or path}: kind={kind!r}, use full, dora or auto")
