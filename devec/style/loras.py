"""Style LoRAs as task vectors in factor form ``scale * B A`` (Sec. 4.2), read and written through diffusers.

Any file ``FluxPipeline.lora_state_dict`` reads (kohya / sd-scripts, diffusers, ai-toolkit, xlabs, ...) is
converted by diffusers' own converters (fused qkv split as diffusers does); peft adapters
(``base_model.model.*`` keys, ``adapter_config.json``) are renamed to diffusers naming first. Modules are named
as diffusers names them, with the component prefix: ``transformer.transformer_blocks.0.attn.to_q``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from devec.engine import LoRAFactors

log = logging.getLogger(__name__)

A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"
# (down, up) key suffixes diffusers' converters may leave (peft; older text-encoder naming)
PAIRS = ((A_SUFFIX, B_SUFFIX), (".lora.down.weight", ".lora.up.weight"),
         (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"))
PEFT_PREFIX = "base_model.model."
COMPONENTS = ("transformer.", "text_encoder.")


@dataclass
class StyleLoRA:
    """One style vector: per-module LoRA factors plus tensors that are not LoRA factors (kept as they are)."""

    name: str
    factors: dict[str, LoRAFactors]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    weight: float = 1.0
    source: str = ""

    @property
    def modules(self) -> list[str]:
        return list(self.factors)

    def norm(self) -> float:
        """Frobenius norm over all modules, from the factors (no dense product)."""
        return sum(f.norm() ** 2 for f in self.factors.values()) ** 0.5


def read_lora(source: str | Path | Mapping[str, torch.Tensor], name: str = "", weight: float = 1.0,
              weight_name: str | None = None) -> StyleLoRA:
    """A LoRA file, directory, hub repository or state dict as per-module :class:`LoRAFactors`."""
    from diffusers import FluxPipeline

    state = _peft_as_diffusers(source, weight_name)
    arg: Any = state if state is not None else (dict(source) if isinstance(source, Mapping) else str(source))
    kwargs = {"weight_name": weight_name} if weight_name and state is None else {}
    state_dict, alphas, metadata = FluxPipeline.lora_state_dict(arg, return_alphas=True, return_lora_metadata=True,
                                                                 **kwargs)
    if not any(k.startswith(COMPONENTS) for k in state_dict):
        state_dict = {f"transformer.{k}": v for k, v in state_dict.items()}
        alphas = {f"transformer.{k}": v for k, v in (alphas or {}).items()}
    alpha_of = {k.removesuffix(".alpha"): float(v) for k, v in (alphas or {}).items()}
    alpha_of.update(_metadata_alphas(metadata or {}, state_dict))
    factors, extras = {}, {}
    for key, value in state_dict.items():
        down, up = next(((d, u) for d, u in PAIRS if key.endswith(d) or key.endswith(u)), (None, None))
        if down is None:
            extras[key] = value
            continue
        if not key.endswith(down):
            continue
        module = key[: -len(down)]
        b = state_dict.get(module + up)
        if b is None:
            raise ValueError(f"{_describe(source)}: {key} has no matching {module + up}")
        rank = value.shape[0]
        alpha = alpha_of.get(module, alpha_of.get(module.split(".", 1)[-1], float(rank)))
        factors[module] = LoRAFactors(b.float(), value.float(), alpha / rank)
    if not factors:
        raise ValueError(f"{_describe(source)} holds no LoRA factors (no '*.lora_A.weight' / 'lora_down' keys)")
    if extras:
        log.warning("%s: %d tensor(s) are not LoRA factors and are applied unchanged: %s", _describe(source),
                    len(extras), ", ".join(list(extras)[:4]))
    return StyleLoRA(name or _describe(source), factors, extras, float(weight), _describe(source))


def to_diffusers_state_dict(factors: Mapping[str, LoRAFactors | torch.Tensor],
                            extras: Mapping[str, torch.Tensor] | None = None,
                            dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Diffusers-naming LoRA state dict (``scale`` folded into B); dense deltas become exact rank-r factors."""
    out: dict[str, torch.Tensor] = {}
    for module, value in factors.items():
        f = value if isinstance(value, LoRAFactors) else dense_to_factors(value)
        out[module + A_SUFFIX] = f.A.to(dtype).clone().contiguous()  # q, k, v of a fused LoRA share A
        out[module + B_SUFFIX] = (f.B * f.scale).to(dtype).contiguous()
    out.update({k: v.to(dtype) for k, v in (extras or {}).items()})
    return out


def dense_to_factors(w: torch.Tensor, tol: float = 1e-6) -> LoRAFactors:
    """Exact low-rank factors of a dense delta (its numerical rank, at least 1)."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    r = max(1, int((s > tol * (s[0] if s.numel() else 0)).sum()))
    return LoRAFactors((u[:, :r] * s[:r]).float(), vh[:r].float(), 1.0)


def save_lora(path: str | Path, factors: Mapping[str, LoRAFactors | torch.Tensor],
              extras: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a diffusers-format LoRA safetensors file atomically (loadable by ``pipe.load_lora_weights``)."""
    from devec.io import save_safetensors

    return save_safetensors(path, to_diffusers_state_dict(factors, extras), metadata={"format": "pt"})


def load_adapter(pipe: Any, name: str, factors: Mapping[str, LoRAFactors | torch.Tensor],
                 extras: Mapping[str, torch.Tensor] | None = None) -> None:
    """Load factors into ``pipe`` as a named adapter through ``FluxPipeline.load_lora_weights``."""
    dtype = pipe.transformer.dtype
    pipe.load_lora_weights(to_diffusers_state_dict(factors, extras, dtype=dtype), adapter_name=name)


def _peft_as_diffusers(source: Any, weight_name: str | None) -> dict[str, torch.Tensor] | None:
    """Rename a peft adapter (``base_model.model.<module>``) to diffusers naming with alpha / r folded into B."""
    config: dict[str, Any] = {}
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if path.is_dir() and (path / "adapter_config.json").exists():
            config = json.loads((path / "adapter_config.json").read_text())
            path = path / (weight_name or "adapter_model.safetensors")
        if not (path.is_file() and path.suffix == ".safetensors"):
            return None
        from safetensors.torch import load_file

        state = load_file(str(path))
        if not config and (path.parent / "adapter_config.json").exists():
            config = json.loads((path.parent / "adapter_config.json").read_text())
    keys = list(state)
    if not keys or not all(k.startswith(PEFT_PREFIX) for k in keys):
        return None
    if any("double_blocks" in k or "single_blocks" in k for k in keys):
        return None  # original-Flux naming under a peft prefix: diffusers converts it (fal / kontext)
    r, alpha = config.get("r"), config.get("lora_alpha")
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    out = {}
    for key, value in state.items():
        module_key = key[len(PEFT_PREFIX):].replace(".default.", ".")
        if module_key.endswith(B_SUFFIX) and alpha is not None:
            module = module_key[: -len(B_SUFFIX)]
            rank = _pattern(rank_pattern, module, r) or value.shape[1]
            value = value * (_pattern(alpha_pattern, module, alpha) / rank)
        out[module_key if module_key.startswith(COMPONENTS) else "transformer." + module_key] = value
    return out


def _metadata_alphas(metadata: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per-module alpha from a diffusers file's peft metadata (``transformer.lora_alpha``, ``alpha_pattern``)."""
    out = {}
    for key in state_dict:
        if not key.endswith(A_SUFFIX):
            continue
        module = key[: -len(A_SUFFIX)]
        component, _, inner = module.partition(".")
        alpha = metadata.get(f"{component}.lora_alpha")
        if alpha is None:
            continue
        patterns = metadata.get(f"{component}.alpha_pattern") or {}
        if isinstance(patterns, str):
            patterns = json.loads(patterns)
        out[module] = float(_pattern(patterns, inner, alpha))
    return out


def _pattern(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    for pattern, value in patterns.items():
        if module == pattern or module.endswith("." + pattern):
            return value
    return default


def _describe(source: Any) -> str:
    return "<state dict>" if isinstance(source, Mapping) else str(source)
