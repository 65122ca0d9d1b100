"""Our own fine-tunes for tasks with no public checkpoint (Country211, FGVC-Aircraft, Caltech256, ...), with the
task_vectors recipe (mlfoundations/task_vectors ``src/finetune.py``, ``src/args.py``).

The image encoder of the pool's pre-trained CLIP is trained with cross-entropy through the task's frozen zero-shot head
(built from the pool's head set, so the task vector fits the heads every table uses): AdamW (weight decay 0.1), lr
1e-5, linear warm-up then cosine, batch 128, gradient norm clipped at 1. Each encoder is written as a run output,
``<run folder>/finetuned/<task>.safetensors`` (open_clip names under ``visual.``), which ``OpenClipPool`` loads
(``pool.own_root``). Not a cache entry: it is an artefact the user keeps.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from devec.runtime import Run
from devec.schedules import WarmupCosineLR
from devec.vision.data import ImageSet, load_tasks, task_pool
from devec.vision.pool import load_pool
from devec.vision.taskpool import evaluate

RECIPE_KEYS = ("tasks", "steps", "batch_size", "lr", "weight_decay", "warmup", "grad_clip", "label_smoothing",
               "train_transform")


def finetune(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Fine-tune the pre-trained image encoder on each task of ``finetune.tasks``; write each as a run output."""
    recipe = OmegaConf.to_container(cfg.finetune, resolve=True)
    names = list(recipe["tasks"])
    tasks = load_tasks(cfg.data, names, run.cache_dir, run.progress)
    pool = load_pool(cfg.pool, cfg.data, tasks, [], run.cache_dir, run.progress).to(cfg.get("device", "cpu"))
    limit = cfg.get("vision", {}).get("test_limit")
    out_dir = run.path("finetuned")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"recipe": recipe, "checkpoints": {}, "zero_shot": {}, "finetuned": {}}
    for i, name in enumerate(names):
        model = copy.deepcopy(pool.model).to(pool.device)
        train = _with_train_transform(tasks[name].train, cfg, recipe)
        losses = train_visual(model.visual, pool.heads[name], train, recipe, seed=int(cfg.seed) + i,
                              progress=run.progress, desc=f"fine-tune {name}")
        weights = {f"visual.{k}": v.detach().cpu().contiguous() for k, v in model.visual.named_parameters()}
        path = out_dir / f"{name}.safetensors"
        _save(path, weights, {"task": name, "recipe": recipe, "head_text": pool.info.get("head_text")})
        results["checkpoints"][name] = str(path)
        results["zero_shot"][name] = evaluate(pool, pool.pretrained, {name: tasks[name]}, limit=limit)[name]
        tuned = {k[len("visual."):]: v.to(pool.device) for k, v in weights.items()}
        results["finetuned"][name] = evaluate(pool, tuned, {name: tasks[name]}, limit=limit)[name]
        results.setdefault("loss", {})[name] = losses
        run.log({f"finetune/{name}/zero_shot": results["zero_shot"][name],
                 f"finetune/{name}/finetuned": results["finetuned"][name]})
    rows = [{"task": n, "zero-shot": results["zero_shot"][n], "fine-tuned": results["finetuned"][n],
             "checkpoint": results["checkpoints"][n]} for n in names]
    run.save_table("finetune_accuracy", rows, ["task", "zero-shot", "fine-tuned", "checkpoint"],
                   title=f"Fine-tuned image encoders (task_vectors recipe); set pool.own_root={out_dir}")
    results["rows"] = rows
    return results


def train_visual(visual: torch.nn.Module, head: torch.Tensor, train: ImageSet, recipe: Mapping[str, Any],
                 seed: int = 0, progress: Any = None, desc: str = "fine-tune") -> list[float]:
    """task_vectors' loop: cross-entropy through the frozen head, AdamW, warm-up + cosine, clipped gradients."""
    steps = int(recipe["steps"])
    params = [p for p in visual.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=float(recipe["lr"]), weight_decay=float(recipe["weight_decay"]))
    sched = WarmupCosineLR(opt, steps, warmup=min(int(recipe["warmup"]), max(0, steps - 1)))
    batches = train.sampler(int(recipe["batch_size"]), seed=seed)
    device = head.device
    visual.train()
    losses = []
    it = progress(range(steps), desc=desc, leave=False) if progress else range(steps)
    for _ in it:
        x, y = next(batches)
        logits = F.normalize(visual(x.to(device)), dim=-1) @ head
        loss = F.cross_entropy(logits, y.to(device), label_smoothing=float(recipe.get("label_smoothing", 0.0)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(recipe["grad_clip"]))
        opt.step()
        sched.step()
        losses.append(loss.item())
    visual.eval()
    for p in params:
        p.requires_grad_(False)
    return losses


def check_settings(cfg: DictConfig) -> None:
    """The ``finetune`` block and its tasks, before any model is built (devec.settings)."""
    from devec.settings.core import ConfigError, _at_least, names_in

    block = cfg.get("finetune")
    if block is None:
        raise ConfigError("finetune: the vision_finetune experiment needs its recipe block (conf/experiment/"
                          "vision_finetune.yaml)")
    unknown = [k for k in block if k not in RECIPE_KEYS]
    if unknown:
        raise ConfigError(f"finetune.{unknown[0]}: unknown key; known keys: {', '.join(RECIPE_KEYS)}")
    if not block.get("tasks"):
        raise ConfigError("finetune.tasks: list the tasks to fine-tune (e.g. [fgvc_aircraft, country211])")
    for key in ("steps", "batch_size"):
        _at_least(f"finetune.{key}", block.get(key), 1)
    if not float(block.get("lr") or 0) > 0:
        raise ConfigError(f"finetune.lr={block.get('lr')!r}: must be > 0")
    data = task_pool(cfg.data)
    names_in("finetune.tasks", list(block.tasks), data.available(), "the data config's tasks")


def _with_train_transform(train: ImageSet, cfg: DictConfig, recipe: Mapping[str, Any]) -> ImageSet:
    """task_vectors trains on open_clip's training preprocess (random resized crop); hub images get it here."""
    if not recipe.get("train_transform") or train.transform is None:
        return train
    from open_clip.transform import image_transform

    size = int(cfg.data.get("image_size", 224))
    return ImageSet(train.images, train.labels, image_transform(size, is_train=True), train.image_key)


def _save(path: Any, weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    import json

    from safetensors.torch import save_file

    from devec import io

    with io.atomic_path(path) as tmp:
        save_file(dict(weights), str(tmp), metadata={"devec": json.dumps(meta, default=str)})
