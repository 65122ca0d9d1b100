"""A small demo pool of real checkpoint files (safetensors) for ``experiment=decompose`` at embedded scale."""

from __future__ import annotations

from pathlib import Path

import torch

from devec import io


def demo_checkpoints(root: Path, k: int = 3, layers: int = 4, dim: int = 64, shared: int = 8, unique: int = 8,
                     seed: int = 0) -> tuple[Path, list[Path]]:
    """Write a pre-trained MLP and k fine-tunes whose updates share ``shared`` directions per layer."""
    root = Path(root)
    pre_path = root / "pretrained.safetensors"
    ft_paths = [root / f"finetuned_{i}.safetensors" for i in range(k)]
    if pre_path.exists() and all(p.exists() for p in ft_paths):
        return pre_path, ft_paths
    gen = torch.Generator().manual_seed(seed)
    pre = {}
    for layer in range(layers):
        pre[f"layers.{layer}.weight"] = torch.randn(dim, dim, generator=gen) / dim**0.5
        pre[f"layers.{layer}.bias"] = torch.zeros(dim)
    pre["norm.weight"] = torch.ones(dim)
    common = {n: torch.linalg.qr(torch.randn(dim, shared, generator=gen))[0] for n in pre if n.endswith(".weight")}
    for path in ft_paths:
        ft = {}
        for name, w in pre.items():
            if w.dim() == 2:
                own = torch.linalg.qr(torch.randn(dim, unique, generator=gen))[0]
                update = 2 * common[name] @ torch.randn(shared, dim, generator=gen) + own @ torch.randn(unique, dim,
                                                                                                    generator=gen)
                ft[name] = w + 0.05 * update / dim**0.5
            else:
                ft[name] = w + 0.01 * torch.randn(w.shape, generator=gen)
        io.save_safetensors(path, ft)
    io.save_safetensors(pre_path, pre)
    return pre_path, ft_paths
