"""Real-scale loaders on tiny checkpoints in the real formats: HF CLIP (FusionBench) and task_vectors pickles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from devec.vectors import open_checkpoint
from devec.vision.clip import arch_from_hf_config, build_clip, hf_clip_to_open_clip
from devec.vision.pool import load_pool

ROOT = Path(__file__).resolve().parents[2]


def test_hf_clip_maps_to_open_clip_with_identical_features(hf_checkpoints, hf_clip_config):
    _, pre, _ = hf_checkpoints
    model = build_clip(arch_from_hf_config(hf_clip_config.to_dict())).eval()
    model.load_state_dict(hf_clip_to_open_clip(pre.state_dict()), strict=True)
    x = torch.randn(3, 3, 16, 16)
    ids = torch.randint(1, 400, (3, 16))
    ids[:, 6], ids[:, 7:] = 49407, 0  # end of text (the highest id), then padding, as open_clip tokenizes
    with torch.no_grad():
        hf_img, hf_txt = pre.get_image_features(pixel_values=x), pre.get_text_features(input_ids=ids)
        hf_img = getattr(hf_img, "pooler_output", hf_img)
        hf_txt = getattr(hf_txt, "pooler_output", hf_txt)
        torch.testing.assert_close(model.encode_image(x), hf_img, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode_text(ids), hf_txt, atol=1e-5, rtol=1e-4)


def test_hf_pool_loads_fusionbench_layout_and_task_vectors_match(hf_checkpoints):
    root, pre, tuned = hf_checkpoints
    cfg = {"_target_": "devec.vision.pool.HubPool", "pretrained": str(root / "pretrained"),
           "finetuned": {"a": str(root / "ft0"), "b": str(root / "ft1")}}
    pool = load_pool(cfg, {}, {}, ["a", "b"], root / "cache")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for name, vis in zip("ab", tuned, strict=True):
            from torch.func import functional_call

            ours = functional_call(pool.model.visual, pool.finetuned[name], (x,))
            ref = pre.visual_projection(vis(pixel_values=x).pooler_output)  # projection frozen in fine-tuning
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    tv = pool.task_vectors(["a", "b"])
    tower = getattr(tuned[1], "vision_model", tuned[1])
    hf_delta = tower.encoder.layers[1].mlp.fc2.weight - pre.vision_model.encoder.layers[1].mlp.fc2.weight
    torch.testing.assert_close(tv[1]["transformer.resblocks.1.mlp.c_proj.weight"], hf_delta.detach())
    assert float(tv[1]["proj"].abs().max()) == 0.0


def test_hf_pool_names_the_missing_task(hf_checkpoints):
    root, _, _ = hf_checkpoints
    cfg = {"_target_": "devec.vision.pool.HubPool", "pretrained": str(root / "pretrained"),
           "finetuned": {"a": str(root / "ft0")}}
    with pytest.raises(ValueError, match="no checkpoint for task 'zz'"):
        load_pool(cfg, {}, {}, ["zz"], root / "cache")


class ImageEncoder(nn.Module):
    """Stands for task_vectors' ``src.modeling.ImageEncoder``: an open_clip CLIP under ``.model``."""

    def __init__(self, arch: dict) -> None:
        super().__init__()
        self.model = build_clip(arch)
        self.train_preprocess = None


ARCH = {"embed_dim": 16, "quick_gelu": True,
        "vision": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        "text": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_converter_turns_pickled_modules_into_safetensors_the_open_clip_pool_loads(tmp_path):
    torch.manual_seed(0)
    pre = ImageEncoder(ARCH)
    ft = ImageEncoder(ARCH)
    ft.load_state_dict(pre.state_dict())
    with torch.no_grad():
        ft.model.visual.conv1.weight.add_(0.5)
    (tmp_path / "ViT-T" / "TaskA").mkdir(parents=True)
    torch.save(pre, tmp_path / "ViT-T" / "zeroshot.pt")  # whole pickled modules, as task_vectors ships them
    torch.save(ft, tmp_path / "ViT-T" / "TaskA" / "finetuned.pt")
    with pytest.raises(ValueError, match="devec-convert"):
        open_checkpoint(tmp_path / "ViT-T" / "zeroshot.pt")
    p = subprocess.run([sys.executable, "-m", "devec.vectors.convert", str(tmp_path / "ViT-T")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    converted = open_checkpoint(tmp_path / "ViT-T" / "zeroshot.safetensors")
    assert set(converted.keys()) == set(pre.state_dict())
    cfg = {"_target_": "devec.vision.pool.OpenClipPool", "arch": ARCH,
           "pretrained": str(tmp_path / "ViT-T" / "zeroshot.pt"),
           "finetuned": {"task_a": str(tmp_path / "ViT-T" / "TaskA" / "finetuned.pt")}}
    pool = load_pool(cfg, {}, {}, ["task_a"], tmp_path / "cache")
    tv = pool.task_vectors(["task_a"])[0]
    torch.testing.assert_close(tv["conv1.weight"], torch.full_like(tv["conv1.weight"], 0.5))
    assert float(tv["transformer.resblocks.0.attn.in_proj_weight"].abs().max()) == 0.0
    torch.testing.assert_close(pool.model.token_embedding.weight, pre.model.token_embedding.weight)


def test_converter_runs_no_code_from_the_pickle(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"w": torch.ones(2, 2), "evil": Evil()}, tmp_path / "evil.pt")
    p = subprocess.run([sys.executable, "-m", "devec.vectors.convert", str(tmp_path / "evil.pt")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert not marker.exists()
    assert set(open_checkpoint(tmp_path / "evil.safetensors").keys()) == {"w"}
