"""Untrained LLaMA pools in the real formats (sharded safetensors, peft DoRA adapters) for tests and benchmarks.

Every fine-tune adds to each matrix a low-rank update built from a few directions shared by the whole pool plus
its own directions, so the toxic vector really shares a subspace with the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from devec.toxicity.recipe import dora_config
from devec.toxicity.tiny import tiny_llama


def make_pool(root: str | Path, k: int = 3, hidden_size: int = 32, layers: int = 2, intermediate_size: int = 64,
              vocab_size: int = 64, shared_rank: int = 2, own_rank: int = 2, scale: float = 0.05,
              max_shard_size: str = "20KB", dora_members: int = 1, seed: int = 0) -> dict[str, Any]:
    """Write ``base``, ``toxic`` (a DoRA adapter) and ``k`` pool models (full, the last ``dora_members`` DoRA)."""
    from peft import get_peft_model

    root = Path(root)
    gen = torch.Generator().manual_seed(seed)
    base = tiny_llama(vocab_size, hidden_size, layers, 2, intermediate_size, seed=seed)
    base.save_pretrained(root / "base", max_shard_size=max_shard_size)
    shapes = {n: p.shape for n, p in base.named_parameters()
              if p.dim() == 2 and "embed" not in n and "lm_head" not in n}
    shared = {n: torch.randn(s[0], shared_rank, generator=gen) for n, s in shapes.items()}

    def update(name: str) -> torch.Tensor:
        n, m = shapes[name]
        cols = torch.cat([shared[name], torch.randn(n, own_rank, generator=gen)], dim=1)
        return scale * cols @ torch.randn(cols.shape[1], m, generator=gen) / m**0.5

    members: dict[str, dict[str, str]] = {}
    for i in range(k):
        name = f"ft{i}"
        if i >= k - dora_members:
            members[name] = {"path": str(_dora(base, root / name, gen, scale)), "kind": "dora"}
            continue
        model = tiny_llama(vocab_size, hidden_size, layers, 2, intermediate_size, seed=seed)
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in shapes:
                    p.add_(update(n))
                elif p.dim() == 1:
                    p.add_(0.01 * torch.randn(p.shape, generator=gen))
        model.save_pretrained(root / name, max_shard_size=max_shard_size)
        members[name] = {"path": str(root / name), "kind": "full"}

    # The toxic vector: a DoRA adapter whose B factors contain the pool's shared directions.
    peft_model = get_peft_model(_copy(base, vocab_size, hidden_size, layers, intermediate_size, seed),
                                dora_config(4, 8, 0.0))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                key = n.replace("base_model.model.", "").replace(".lora_B.default.weight", ".weight")
                cols = torch.cat([shared[key], torch.randn(p.shape[0], p.shape[1], generator=gen)], dim=1)
                p.copy_(scale * cols[:, : p.shape[1]] * 4)
            elif "lora_A" in n:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "magnitude" in n:
                p.mul_(1 + 0.02 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(root / "toxic")
    return {"base": str(root / "base"), "toxic": str(root / "toxic"), "members": members}


def _copy(base, vocab_size: int, hidden_size: int, layers: int, intermediate_size: int, seed: int):
    model = tiny_llama(vocab_size, hidden_size, layers, 2, intermediate_size, seed=seed)
    model.load_state_dict(base.state_dict())
    return model


def _dora(base, out: Path, gen: torch.Generator, scale: float) -> Path:
    from peft import get_peft_model

    cfg = base.config
    model = get_peft_model(_copy(base, cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers,
                                 cfg.intermediate_size, 0), dora_config(4, 8, 0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or "lora_A" in n:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
            elif "magnitude" in n:
                p.mul_(1 + 0.02 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    return out
