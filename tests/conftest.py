"""Shared fixtures: offline W&B, a private cache, and planted task-vector pools."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test session gets its own DEVEC_CACHE and outputs directory."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("DEVEC_CACHE", os.environ.get("DEVEC_TEST_CACHE", str(root / "cache")))
    monkeypatch.setenv("DEVEC_OUTPUTS", str(root / "outputs"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Test models are tiny and overhead-bound: one intra-op thread is fastest and spares a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def planted(n: int, m: int, shared: int, unique: int, k: int, seed: int = 0, sigma: float = 0.0):
    """k task vectors with ``shared`` common column directions and ``unique`` own ones; returns (vectors, truth)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, shared + k * unique, generator=gen, dtype=torch.float64))
    vectors = []
    for i in range(k):
        basis = torch.cat([q[:, :shared], q[:, shared + i * unique: shared + (i + 1) * unique]], 1)
        w = basis @ torch.randn(shared + unique, m, generator=gen, dtype=torch.float64)
        vectors.append(w + sigma * torch.randn(n, m, generator=gen, dtype=torch.float64))
    return vectors, q[:, :shared]


def tiny_clip_config():
    """A transformers CLIPConfig of a tiny CLIP (2 vision layers, 16 px images) for full-format fixtures."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=8),
        projection_dim=16)
