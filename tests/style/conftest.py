"""Tiny Flux pipelines and style LoRA files in the real formats, built in fixtures (no hub)."""

from __future__ import annotations

import pytest
import torch

from devec.engine import LoRAFactors
from devec.style import data
from devec.style.pipeline import build_tiny_pipeline

TINY_ARCH = {"image_size": 32, "max_sequence_length": 8, "text_dim": 32, "vae_channels": [8, 8], "latent_channels": 4,
             "vae_groups": 4, "vae_attention": False, "num_layers": 1, "num_single_layers": 1,
             "attention_head_dim": 16, "num_attention_heads": 2, "axes_dims_rope": [4, 6, 6]}
DIM = 32  # num_attention_heads * attention_head_dim


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory):
    """A randomly initialised tiny FluxPipeline saved with save_pretrained (safetensors)."""
    torch.manual_seed(0)
    pipe = build_tiny_pipeline(TINY_ARCH, data.vocabulary(), seed=0)
    path = tmp_path_factory.mktemp("tiny_flux")
    pipe.save_pretrained(str(path), safe_serialization=True)
    return path


ATTN = "transformer.transformer_blocks.0.attn."
MODULES = {ATTN + "to_q": DIM, ATTN + "to_k": DIM, ATTN + "to_v": DIM, ATTN + "to_out.0": DIM,
           "transformer.single_transformer_blocks.0.proj_out": 5 * DIM}  # module -> input width


def random_factors(seed: int, rank: int = 4, scale: float = 1.0) -> dict[str, LoRAFactors]:
    """Factors for a few modules of the tiny transformer (diffusers names); q, k, v share A as a fused qkv LoRA does."""
    g = torch.Generator().manual_seed(seed)
    qkv_a = 0.3 * torch.randn(rank, DIM, generator=g)
    out = {}
    for m, n_in in MODULES.items():
        a = qkv_a if m.endswith(("to_q", "to_k", "to_v")) else 0.3 * torch.randn(rank, n_in, generator=g)
        out[m] = LoRAFactors(0.3 * torch.randn(DIM, rank, generator=g), a, scale)
    return out
