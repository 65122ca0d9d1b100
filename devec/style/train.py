"""Embedded scale: a tiny Flux pre-trained by flow matching on shapes, and style LoRAs trained with peft on top."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from devec import io, store
from devec.schedules import warmup_linear
from devec.style import data
from devec.style.pipeline import (
    build_tiny_pipeline,
    encode_prompts,
    flow_matching_loss,
    image_ids,
    load_pipeline,
    to_latents,
)

Progress = Callable[..., Iterable]
# a change to any of these modules rebuilds the cache
BUILDER_CODE = ("devec.style.train", "devec.style.pipeline", "devec.style.data", "devec.schedules")


def _plain(progress: Progress | None) -> Progress:
    return progress or (lambda it, desc="", total=None: it)


def build_embedded(pool: Mapping[str, Any], cache_dir: str | Path, progress: Progress | None = None,
                   seed: int = 0, resume: bool = True, names: Iterable[str] | None = None
                   ) -> tuple[Path, dict[str, Path]]:
    """The tiny base pipeline directory and one LoRA file per style (the styles ``names``; all when None), built
    once and cached by config and code.

    Each LoRA is a unit: a run killed after training some of them trains only the others when started again;
    ``resume=False`` trains every LoRA again (the base pipeline, a cache, is kept).
    """
    progress = _plain(progress)
    base_cfg = {"code": store.code_version(*BUILDER_CODE), "arch": dict(pool["arch"]),
                "train": dict(pool["base_train"]), "seed": seed, "words": data.vocabulary()}
    base_key = store.config_key(base_cfg)
    root = Path(cache_dir) / "style" / f"tiny_flux_{base_key}"
    base_dir = store.built_dir(root / "base", {"key": base_key}, lambda tmp: _build_base(tmp, base_cfg, progress))
    lora_cfg = {"lora": dict(pool["lora_train"]), "styles": [s["name"] for s in pool["styles"]], "seed": seed}
    lora_key = store.config_key(lora_cfg)
    lora_dir = root / f"loras_{lora_key}"
    wanted = [s["name"] for s in pool["styles"]] if names is None else list(names)
    paths = {s["name"]: lora_dir / f"{s['name']}.safetensors" for s in pool["styles"] if s["name"] in wanted}
    metas = {n: {"base": base_key, "lora": lora_key, "style": n} for n in paths}
    missing = [n for n, p in paths.items() if not resume or not store.sealed(p, metas[n])]
    if missing:
        pipe = load_pipeline(base_dir)
        for name in missing:
            paths[name] = _train_lora(pipe, name, paths[name], dict(pool["lora_train"]),
                                      int(pool["arch"]["image_size"]), int(pool["arch"]["max_sequence_length"]),
                                      seed, progress)
            store.seal(paths[name], metas[name])
    return base_dir, paths


def _build_base(out_dir: Path, cfg: Mapping[str, Any], progress: Progress) -> None:
    arch, train = cfg["arch"], cfg["train"]
    torch.manual_seed(cfg["seed"])
    pipe = build_tiny_pipeline(arch, cfg["words"], seed=cfg["seed"])
    size = int(arch["image_size"])
    content, prompts, _ = data.make_content(int(train["images"]), size, cfg["seed"])
    styled = [data.apply_style(name, content) for name in data.STYLES]
    train_vae(pipe.vae, torch.cat([content, *styled]), int(train["vae_steps"]), int(train["batch_size"]),
              float(train["vae_lr"]), cfg["seed"], progress)
    _fit_transformer(pipe, content, prompts, train, size, int(arch["max_sequence_length"]), cfg["seed"], progress,
                     desc="pre-train tiny Flux (flow matching)")
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    io.write_json(out_dir / "devec_build.json", cfg)


def train_vae(vae: Any, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
              progress: Progress) -> float:
    """Fit the tiny AutoencoderKL to reconstruct ``images`` (L1 + small KL); returns the last loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    vae.train()
    loss = torch.tensor(0.0)
    for _ in progress(range(steps), desc="train tiny VAE"):
        x = images[torch.randint(len(images), (batch_size,), generator=g)] * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = (rec - x).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    vae.requires_grad_(False)
    return float(loss.detach())


def _fit_transformer(pipe: Any, images: torch.Tensor, prompts: list[str], train: Mapping[str, Any], size: int,
                     max_len: int, seed: int, progress: Progress, desc: str,
                     params: list[torch.nn.Parameter] | None = None) -> float:
    """Flow-matching training of the transformer (all weights, or ``params`` only) on (image, prompt) pairs."""
    g = torch.Generator().manual_seed(seed + 1)
    latents = to_latents(pipe, images)
    unique = sorted(set(prompts))
    embeds, pooled, text_ids = encode_prompts(pipe, unique, max_len)
    index = torch.tensor([unique.index(p) for p in prompts])
    ids = image_ids(pipe, size)
    params = params if params is not None else list(pipe.transformer.parameters())
    opt = torch.optim.AdamW(params, lr=float(train["lr"]), weight_decay=0.0)
    steps, bs = int(train["steps"]), int(train["batch_size"])
    sched = warmup_linear(opt, warmup=50, steps=steps, floor=0.1)
    pipe.transformer.train()
    loss = torch.tensor(0.0)
    for _ in progress(range(steps), desc=desc):
        batch = torch.randint(len(images), (bs,), generator=g)
        loss = flow_matching_loss(pipe, latents[batch], embeds[index[batch]], pooled[index[batch]], text_ids, ids, g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    pipe.transformer.eval()
    return float(loss.detach())


def _train_lora(pipe: Any, style: str, path: Path, train: Mapping[str, Any], size: int, max_len: int, seed: int,
                progress: Progress) -> Path:
    """A peft LoRA on the transformer's linears, trained on the content redrawn in ``style``; saved by diffusers.

    Returns where it was saved: ``path``, or a temporary file for this run when the cache is read-only.
    """
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    # same_init: one recipe and seed for every style (the same initial A); otherwise each style its own.
    torch.manual_seed(seed if train.get("same_init", False) else seed + sum(map(ord, style)))
    content, prompts, _ = data.make_content(int(train["images"]), size, seed + 7)
    change, sharing = data.common_spec(train.get("common", "none"))
    images = data.apply_style(style, content)
    if sharing is None or style in sharing:
        images = data.common_change(change, images)
    config = LoraConfig(r=int(train["rank"]), lora_alpha=float(train["alpha"]),
                        target_modules=list(train["target_modules"]), init_lora_weights="gaussian")
    pipe.transformer.add_adapter(config, adapter_name=style)
    pipe.transformer.set_adapter(style)
    params = [p for n, p in pipe.transformer.named_parameters() if "lora_" in n and f".{style}." in n]
    for p in pipe.transformer.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    _fit_transformer(pipe, images, prompts, train, size, max_len, seed + 11, progress, desc=f"train LoRA '{style}'",
                     params=params)
    state = get_peft_model_state_dict(pipe.transformer, adapter_name=style)
    if not store.writable(path.parent):
        path = Path(tempfile.mkdtemp(prefix="devec-lora-")) / path.name
        atexit.register(shutil.rmtree, path.parent, True)
    with io.atomic_path(path) as tmp:
        FluxPipeline.save_lora_weights(str(tmp.parent), transformer_lora_layers=state, weight_name=tmp.name,
                                       transformer_lora_adapter_metadata=config.to_dict())
    pipe.transformer.delete_adapters(style)
    return path
