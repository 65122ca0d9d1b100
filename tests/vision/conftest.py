"""Vision fixtures: tiny tasks and the smallest real CLIP checkpoints in the real formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from devec.cli import CONFIG_DIR

torch.set_num_threads(1)


def tiny_cfg(experiment: str, tmp: Path, *overrides: str):
    """The composed config of ``experiment`` at the tiny preset, as the ``devec`` command would build it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"experiment={experiment}", "pool=vision/tiny", "data=vision/tiny",
                                            "logger=none", f"paths.root_dir={tmp}", f"name={experiment}",
                                            *overrides])


@pytest.fixture(scope="session")
def hf_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16)


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory, hf_clip_config):
    """A tiny HF ``CLIPModel`` directory and two ``CLIPVisionModel`` fine-tunes (FusionBench's layout)."""
    from transformers import CLIPModel, CLIPVisionModel

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    pre = CLIPModel(hf_clip_config).eval()
    pre.save_pretrained(root / "pretrained", safe_serialization=True)
    tuned = []
    for i in range(2):
        vis = CLIPVisionModel(hf_clip_config.vision_config)
        tower = getattr(vis, "vision_model", vis)  # transformers >= 5 flattens CLIPVisionModel
        tower.load_state_dict(pre.vision_model.state_dict())
        with torch.no_grad():
            for p in vis.parameters():
                p.add_(0.01 * (i + 1) * torch.randn_like(p))
        vis.save_pretrained(root / f"ft{i}", safe_serialization=True)
        if i == 1:  # the hub's FusionBench files (transformers 4): keys under "vision_model."
            sd = {f"vision_model.{k}" if not k.startswith("vision_model.") else k: v.contiguous()
                  for k, v in tower.state_dict().items()}
            save_file(sd, str(root / "ft1" / "model.safetensors"))
        tuned.append(vis.eval())
    return root, pre, tuned


MERGE_ARCH = {"embed_dim": 8, "vision": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
              "text": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
"""The CLIP of the merging-method tests: one block of width 16."""


def tiny_merge_setup(k: int = 2):
    """A tiny CLIP, its visual parameters, k random task vectors, k three-class tasks on 24 images (validation: the
    first 12), random heads and a pool-like namespace: ``model, pre, vecs, tasks, heads, pool``."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from devec.vision.clip import build_clip
    from devec.vision.data import ImageSet, Task

    torch.manual_seed(0)
    model = build_clip(MERGE_ARCH).eval().requires_grad_(False)
    pre = {n: p.detach().clone() for n, p in model.visual.named_parameters()}
    vecs = [{n: 0.05 * torch.randn_like(p) for n, p in pre.items()} for _ in range(k)]
    images = torch.randint(0, 255, (24, 3, 16, 16), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(24) % 3)
    tasks = {f"t{i}": Task(f"t{i}", ["a", "b", "c"], ["{c}"], data, data.head(12), data) for i in range(k)}
    heads = {n: F.normalize(torch.randn(8, 3), dim=0) * 20 for n in tasks}
    finetuned = {n: {p: pre[p] + v[p] for p in pre} for n, v in zip(tasks, vecs, strict=True)}
    pool = SimpleNamespace(model=model, pretrained=pre, finetuned=finetuned, heads=heads)
    return model, pre, vecs, tasks, heads, pool
