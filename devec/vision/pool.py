"""The model pool: a pre-trained CLIP, fine-tuned image encoders per task, their task vectors and zero-shot heads.

A pool config names its class with ``_target_`` (FusionBench's modelpool shape): :class:`EmbeddedPool` (a tiny
open_clip CLIP devec pre-trains and fine-tunes itself, cached), :class:`HubPool` (FusionBench's transformers CLIP
fine-tunes, mapped to open_clip names) and :class:`OpenClipPool` (task_vectors checkpoints, converted once to
safetensors by ``devec-convert``). The class is the schema: a misspelt key fails when the config is instantiated.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from devec import hub, io, store
from devec.runtime import built, plain
from devec.vectors import open_checkpoint
from devec.vision.clip import (
    arch_from_hf_config,
    build_clip,
    hf_clip_to_open_clip,
    strip_prefix,
    tokenizer,
    visual_state,
)
from devec.vision.data import Task, TaskPool, pretraining_corpus, task_pool
from devec.vision.head_text import SETS as HEAD_TEXT_SETS
from devec.vision.head_text import head_text
from devec.vision.heads import cached_head
from devec.vision.train import finetune_visual, pretrain_clip

log = logging.getLogger(__name__)

# a change to any of these modules rebuilds the cached models
HUB_PATTERNS = ("*.safetensors", "*.json", "*.txt")  # what is downloaded of a hub checkpoint (HubPool)
MODEL_CODE = ("devec.vision.clip", "devec.vision.train", "devec.vision.pool", "devec.schedules")
# Pre-trained embedded CLIPs shipped with the package (devec/vision/ship_weights.py writes them): one safetensors
# file per seed and a manifest with each file's key (:func:`pretrain_key`), sha256 and zero-shot accuracy.
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MANIFEST = "manifest.json"
SHIPPED_FORMAT = "devec-shipped-clip/1"
# what the pre-training runs (recorded in the manifest, not in the key: the slow regeneration test watches them)
PRETRAIN_CODE = ("devec.vision.clip", "devec.vision.train", "devec.vision.data", "devec.vision.synthetic",
                 "devec.schedules")
PRETRAINED_WEIGHTS = ("shipped", "train")


@dataclass
class VisionPool:
    """Pre-trained CLIP (its image encoder is the functional template), fine-tuned encoders and heads."""

    model: nn.Module
    pretrained: dict[str, torch.Tensor]
    finetuned: dict[str, dict[str, torch.Tensor]]
    heads: dict[str, torch.Tensor]
    key: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(iter(self.pretrained.values())).device

    def to(self, device: str | torch.device) -> VisionPool:
        """Move the model, weights and heads to ``device`` (``cfg.device``: cpu | cuda)."""
        device = torch.device(device)
        self.model.to(device)
        self.pretrained = {k: v.to(device) for k, v in self.pretrained.items()}
        self.finetuned = {n: {k: v.to(device) for k, v in sd.items()} for n, sd in self.finetuned.items()}
        self.heads = {n: h.to(device) for n, h in self.heads.items()}
        return self

    def task_vectors(self, names: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """``theta_ft - theta_pre`` of the image encoder for each task in ``names`` (eq. 1)."""
        missing = [n for n in names if n not in self.finetuned]
        if missing:
            raise ValueError(f"the model pool has no fine-tuned encoder for {missing}; "
                             f"available: {sorted(self.finetuned)} (pool.finetuned)")
        return [{k: self.finetuned[n][k] - v for k, v in self.pretrained.items()} for n in names]


@dataclass(kw_only=True)
class PoolSpec:
    """A vision model pool config (``_target_``: one subclass per kind of checkpoint); :meth:`load` builds it."""

    threads: int | None = None      # torch threads unless vision.threads is set (None: torch default)
    budget: dict[str, Any] = field(default_factory=dict)   # method budgets at this scale (conf/method/vision)
    head_text: str | None = None    # the class names/templates the checkpoints were trained with (head_text.SETS)

    def __post_init__(self) -> None:
        if self.head_text is not None and self.head_text not in HEAD_TEXT_SETS:
            raise ValueError(f"pool.head_text={self.head_text!r}: unknown set; known: {', '.join(HEAD_TEXT_SETS)} "
                             "(devec/vision/head_text.py), or null for the data config's class names and templates")

    def load(self, data: TaskPool | None, tasks: Mapping[str, Task], names: Sequence[str], cache_dir: Path,
             progress: Any = None) -> VisionPool:
        """Build or load the pool: fine-tuned encoders for ``names``, heads for every task in ``tasks``."""
        raise NotImplementedError


@dataclass(kw_only=True)
class EmbeddedPool(PoolSpec):
    """A tiny open_clip CLIP devec pre-trains on its own synthetic images and fine-tunes per task; cached."""

    seed: int = 0
    arch: dict[str, Any]
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    pretrained_weights: str = "shipped"   # shipped: the package's weights when their key matches; train: pre-train

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pretrained_weights not in PRETRAINED_WEIGHTS:
            raise ValueError(f"pool.pretrained_weights={self.pretrained_weights!r}: use 'shipped' (the weights "
                             f"devec ships, when made for this arch/pretrain config and seed) or 'train'")

    def load(self, data, tasks, names, cache_dir, progress=None) -> VisionPool:
        if data is None:
            raise ValueError("the embedded vision pool is built on its data settings: pass the data config")
        return _embedded(dataclasses.asdict(self), dataclasses.asdict(data), tasks, list(names), Path(cache_dir),
                         progress)


@dataclass(kw_only=True)
class HubPool(PoolSpec):
    """FusionBench's transformers CLIP fine-tunes (hub ids or directories), mapped to open_clip names."""

    pretrained: str
    finetuned: dict[str, str] = field(default_factory=dict)

    def load(self, data, tasks, names, cache_dir, progress=None) -> VisionPool:
        return _hf(dataclasses.asdict(self), tasks, list(names), Path(cache_dir))


@dataclass(kw_only=True)
class OpenClipPool(PoolSpec):
    """task_vectors checkpoints (Ilharco et al.), converted once to safetensors by ``devec-convert``."""

    arch: Any                        # an open_clip model name, e.g. ViT-B-32
    pretrained: str
    finetuned: dict[str, str] = field(default_factory=dict)
    text_pretrained: str | None = None
    root: str | None = None          # where the checkpoints lie (the paths above may interpolate it)
    own_root: str | None = None      # where our fine-tunes lie (experiment=vision_finetune's finetuned/ folder)

    def load(self, data, tasks, names, cache_dir, progress=None) -> VisionPool:
        return _open_clip(dataclasses.asdict(self), tasks, list(names), Path(cache_dir))


def load_pool(cfg: Mapping[str, Any] | PoolSpec, data_cfg: Mapping[str, Any] | TaskPool, tasks: Mapping[str, Task],
              finetune: Sequence[str], cache_dir: Path, progress: Any = None) -> VisionPool:
    """Build or load the pool ``cfg`` names (``_target_``) for ``finetune`` tasks; heads for every task in ``tasks``."""
    data = task_pool(data_cfg) if data_cfg else None  # only the embedded pool reads the data settings
    return pool_spec(cfg).load(data, tasks, list(finetune), Path(cache_dir), progress)


def pool_spec(cfg: Mapping[str, Any] | PoolSpec) -> PoolSpec:
    """The :class:`PoolSpec` the ``pool`` config names with ``_target_`` (as is when already built)."""
    return built(cfg, PoolSpec, "pool", "devec.vision.pool.EmbeddedPool, HubPool or OpenClipPool (conf/pool/vision/)")


def _heads(model: nn.Module, tok: Any, tasks: Mapping[str, Task], key: str, cache_dir: Path,
           head_set: str | None = None) -> dict[str, torch.Tensor]:
    """Each task's zero-shot head, from the checkpoint set's class names and templates where it has them."""
    return {n: cached_head(model, tok, *head_inputs(head_set, n, t), key, cache_dir) for n, t in tasks.items()}


def head_inputs(head_set: str | None, name: str, task: Task) -> tuple[list[str], list[str]]:
    """``(classnames, templates)`` of task ``name``'s head: the set's (pool.head_text), else the task's."""
    text = head_text(head_set, name)
    classnames = list(text["classnames"] or task.classnames)
    if len(classnames) != len(task.classnames):
        raise ValueError(f"pool.head_text={head_set!r} lists {len(classnames)} classes for {name!r}, the dataset has "
                         f"{len(task.classnames)}: is data.tasks_hf.{name} the dataset the checkpoints were "
                         f"trained on?")
    return classnames, list(text["templates"] or task.templates)


# ---------------------------------------------------------------- embedded: pre-train and fine-tune ourselves

def _embedded(cfg, data_cfg, tasks, finetune, cache_dir, progress) -> VisionPool:
    corpus_tasks = list(plain(cfg["pretrain"]).get("tasks") or tasks)
    model, key, source = _pretrained(cfg, data_cfg, corpus_tasks, cache_dir, progress)
    tok = tokenizer(plain(cfg["arch"]))
    ft_cfg = plain(cfg["finetune"])
    root = cache_dir / "vision" / "models" / f"embedded-{key}"
    heads = _heads(model, tok, tasks, key, cache_dir)
    pretrained = visual_state(model)
    ft_key = store.config_key(ft_cfg)
    finetuned = {}
    for i, name in enumerate(finetune):
        path = root / f"finetuned-{ft_key}" / f"{name}-{i}.safetensors"  # its seed depends on its place
        entry = {"key": key, "finetune": ft_key, "task": name, "index": i}
        found = store.load_entry(path, entry)
        if found is not None and set(found[0]) == set(pretrained):
            finetuned[name] = found[0]
            continue
        student = copy.deepcopy(model)
        torch.manual_seed(int(cfg.get("seed", 0)) + i + 1)
        finetuned[name] = finetune_visual(student, heads[name], tasks[name].train, int(ft_cfg["steps"]),
                                          int(ft_cfg["batch_size"]), float(ft_cfg["lr"]), seed=i,
                                          progress=progress, desc=f"fine-tune {name}")
        store.save_entry(path, finetuned[name], entry)
    for p in model.parameters():
        p.requires_grad_(False)
    return VisionPool(model, pretrained, finetuned, heads, key,
                      {"source": "embedded", "cache": str(root), "pretrained": source})


def pretrain_key(cfg: Mapping[str, Any], data_cfg: Mapping[str, Any], corpus_tasks: Sequence[str]) -> str:
    """16 hex digits of what the pre-trained CLIP is made from: the ``arch`` and ``pretrain`` blocks, the corpus
    tasks, the image size and the seed (a shipped file is used only when its key equals this)."""
    return store.key({"arch": plain(cfg["arch"]), "pretrain": plain(cfg["pretrain"]), "corpus": list(corpus_tasks),
                      "image_size": int(data_cfg["image_size"]), "seed": int(cfg.get("seed", 0))})


def pretrain_embedded(cfg: Mapping[str, Any], data_cfg: Mapping[str, Any], corpus_tasks: Sequence[str],
                      cache_dir: Path, progress: Any = None) -> tuple[nn.Module, list[float]]:
    """Pre-train the embedded CLIP from scratch as the pool config ``cfg`` says; the model and its loss curve."""
    arch, pre_cfg, seed = plain(cfg["arch"]), plain(cfg["pretrain"]), int(cfg.get("seed", 0))
    model = _fresh_clip(arch, seed)
    images, captions = pretraining_corpus(corpus_tasks, int(pre_cfg["per_task"]), int(data_cfg["image_size"]),
                                          cache_dir, progress, context=pre_cfg.get("context"))
    losses = pretrain_clip(model, images, captions, tokenizer(arch), int(pre_cfg["steps"]),
                           int(pre_cfg["batch_size"]), float(pre_cfg["lr"]), seed=seed, progress=progress,
                           lock_token_embedding=bool(pre_cfg.get("lock_token_embedding", True)))
    return model.eval(), losses


def _fresh_clip(arch: Mapping[str, Any], seed: int) -> nn.Module:
    """The embedded CLIP of ``arch`` at its seeded initialisation (pre-training's start; loaded weights replace it)."""
    torch.manual_seed(seed)
    return build_clip(arch)


def _pretrained(cfg, data_cfg, corpus_tasks, cache_dir, progress) -> tuple[nn.Module, str, str]:
    """The pre-trained CLIP, the cache key of what is built on it, and where it came from (shipped | cached |
    trained); one log line says which, and why a shipped file was not used."""
    arch, seed = plain(cfg["arch"]), int(cfg.get("seed", 0))
    ship_key = pretrain_key(cfg, data_cfg, corpus_tasks)
    shipped, why = (None, "pool.pretrained_weights=train") if cfg.get("pretrained_weights") == "train" else \
        shipped_weights(ship_key, seed)
    data_key = {k: plain(data_cfg.get(k)) for k in ("image_size", "n_train", "n_test", "val_fraction", "val_seed")}
    base = {"arch": arch, "pretrain": plain(cfg["pretrain"]), "corpus": list(corpus_tasks), "data": data_key,
            "seed": seed, "code": store.code_version(*MODEL_CODE)}
    if shipped is not None:
        state, record = shipped
        model = _fresh_clip(arch, seed)
        model.load_state_dict(state)
        log.info("pre-trained CLIP: the shipped weights %s (seed %d, key %s, %s; zero-shot avg %.1f in the "
                 "manifest)%s", record["file"], seed, ship_key, record["dtype"], record["zero_shot_avg"], why)
        return model.eval(), store.config_key({**base, "pretrained": f"shipped:{record['sha256']}"}), "shipped"
    key = store.config_key({**base, "pretrained": "trained"})
    root = cache_dir / "vision" / "models" / f"embedded-{key}"
    pre_path = root / "pretrained.safetensors"
    found = store.load_entry(pre_path, {"key": key})
    if found is not None:
        model = _fresh_clip(arch, seed)
        model.load_state_dict(found[0])
        log.info("pre-trained CLIP: from the cache %s (%s)", pre_path, why)
        return model.eval(), key, "cached"
    log.info("pre-trained CLIP: pre-training it (%s)", why)
    model, losses = pretrain_embedded(cfg, data_cfg, corpus_tasks, cache_dir, progress)
    if store.save_entry(pre_path, model.state_dict(), {"key": key}) is not None:
        io.write_json(root / "pretrain_loss.json", losses)  # a record for the reader, never read back
    return model, key, "trained"


def shipped_manifest(folder: Path | None = None) -> dict[str, Any] | None:
    """The manifest of the shipped pre-trained weights (``devec/vision/weights/manifest.json``), None if absent."""
    path = (folder or SHIPPED_DIR) / SHIPPED_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == SHIPPED_FORMAT else None


def shipped_weights(key: str, seed: int, folder: Path | None = None
                    ) -> tuple[tuple[dict[str, torch.Tensor], dict[str, Any]] | None, str]:
    """``((state dict, manifest record), note)`` of the shipped file for ``seed`` when its key is ``key``;
    ``(None, why not)`` otherwise. Safetensors only (no pickle), checked against the manifest's sha256."""
    folder = folder or SHIPPED_DIR
    manifest = shipped_manifest(folder)
    regen = f"regenerate with `python -m devec.vision.ship_weights --seeds {seed}`"
    if manifest is None:
        return None, f"no shipped weights in {folder}"
    record = next((r for r in manifest.get("weights", []) if int(r["seed"]) == seed), None)
    if record is None:
        seeds = ", ".join(str(r["seed"]) for r in manifest.get("weights", []))
        return None, f"no shipped weights for seed {seed} (shipped: {seeds or 'none'})"
    if record["key"] != key:
        return None, (f"the shipped weights of seed {seed} were made for another arch/pretrain config (key "
                      f"{record['key']}, this config {key}); {regen}, or set pool.pretrained_weights=train")
    path = folder / record["file"]
    if not path.is_file() or io.sha256_file(path) != record["sha256"]:
        return None, f"{path} is missing or differs from its manifest's sha256; {regen}"
    found = store.load_entry(path, {"key": key, "seed": seed})
    if found is None:
        return None, f"{path} is damaged or written for another key; {regen}"
    changed = [m for m, v in _pretrain_code().items() if record.get("code", {}).get(m) != v]
    note = f"; {', '.join(changed)} changed since they were made (the key covers the config)" if changed else ""
    return ({k: v.float() if v.is_floating_point() else v for k, v in found[0].items()}, record), note


def _pretrain_code() -> dict[str, str]:
    """Code version of each module the pre-training runs: recorded in the manifest beside the key."""
    return {m: store.code_version(m) for m in PRETRAIN_CODE}


# ---------------------------------------------------------------- real scale

def _all(ckpt_source: Path | str) -> dict[str, torch.Tensor]:
    ck = open_checkpoint(ckpt_source)
    return {k: ck.get(k) for k in ck.keys()}


def _visual(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}


def _check_visual(name: str, sd: Mapping[str, torch.Tensor], pretrained: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(pretrained) - set(sd))
    if missing:
        raise ValueError(f"fine-tuned encoder {name!r} lacks {len(missing)} image-encoder parameters, e.g. "
                         f"{missing[:3]}: is pool.finetuned.{name} a checkpoint of the same architecture?")


def _hf(cfg, tasks, finetune, cache_dir) -> VisionPool:
    """FusionBench: ``openai/clip-vit-base-patch32`` + ``tanganke/clip-vit-base-patch32_<task>`` (CLIPVisionModel)."""
    pre_dir = hub.resolve(cfg["pretrained"], HUB_PATTERNS, key="pool.pretrained")
    arch = arch_from_hf_config(pre_dir / "config.json")
    model = build_clip(arch)
    model.load_state_dict(hf_clip_to_open_clip(_all(pre_dir)), strict=True)
    model.eval().requires_grad_(False)
    pretrained = visual_state(model)
    finetuned = {}
    sources = dict(cfg["finetuned"])
    for name in finetune:
        if name not in sources:
            raise ValueError(f"pool.finetuned has no checkpoint for task {name!r}")
        ckpt = hub.resolve(sources[name], HUB_PATTERNS, key=f"pool.finetuned.{name}")
        sd = _visual(hf_clip_to_open_clip(_all(ckpt), visual_only=True))
        sd.setdefault("proj", pretrained["proj"])  # CLIPVisionModel: the projection stayed frozen
        _check_visual(name, sd, pretrained)
        finetuned[name] = {k: sd[k] for k in pretrained}
    key = weights_key(model)
    heads = _heads(model, tokenizer(arch), tasks, key, cache_dir, cfg.get("head_text"))
    return VisionPool(model, pretrained, finetuned, heads, key, {"source": "hf", "head_text": cfg.get("head_text")})


def _open_clip(cfg, tasks, finetune, cache_dir) -> VisionPool:
    """task_vectors: ``ViT-B-32/zeroshot.pt`` and ``<Dataset>/finetuned.pt`` converted to safetensors once."""
    arch = plain(cfg["arch"])
    model = build_clip(arch)
    sd = strip_prefix(_all(_safe_path(cfg["pretrained"])))
    own = model.state_dict()
    text = {k: v for k, v in own.items() if not k.startswith("visual.")}
    if not all(k in sd for k in text):
        tag = cfg.get("text_pretrained")
        if not tag:
            raise ValueError(f"{cfg['pretrained']} has no text tower; set pool.text_pretrained (an open_clip "
                             f"pretrained tag such as 'openai') to build zero-shot heads")
        import open_clip

        ref = open_clip.create_model(arch, pretrained=tag).state_dict()
        sd = {**{k: ref[k] for k in text}, **{k: v for k, v in sd.items() if k in own}}
    model.load_state_dict({k: sd[k] for k in own}, strict=True)
    model.eval().requires_grad_(False)
    pretrained = visual_state(model)
    sources = dict(cfg["finetuned"])
    finetuned = {}
    for name in finetune:
        if name not in sources:
            raise ValueError(f"pool.finetuned has no checkpoint for task {name!r}")
        vis = _visual(strip_prefix(_all(_safe_path(sources[name]))))
        _check_visual(name, vis, pretrained)
        finetuned[name] = {k: vis[k] for k in pretrained}
    key = weights_key(model)
    heads = _heads(model, tokenizer(arch), tasks, key, cache_dir, cfg.get("head_text"))
    return VisionPool(model, pretrained, finetuned, heads, key,
                      {"source": "open_clip", "head_text": cfg.get("head_text")})


def weights_key(model: nn.Module) -> str:
    """A hash of the text tower's weights (all the zero-shot heads depend on): moving the checkpoints keeps it."""
    text = {k: v for k, v in model.state_dict().items() if not k.startswith("visual.")}
    return store.tensors_digest(text)[:16]


def _safe_path(source: str) -> Path:
    path = Path(str(source)).expanduser()
    if path.suffix in (".pt", ".pth", ".bin") and path.with_suffix(".safetensors").exists():
        return path.with_suffix(".safetensors")
    if not path.exists() and "SET-ME" in str(path):
        raise FileNotFoundError(f"{path}: set pool.own_root (or DEVEC_VISION_FINETUNED) to the finetuned/ folder of "
                                f"an experiment=vision_finetune run that fine-tuned this task")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: download the task_vectors checkpoints and convert them with "
                                f"`devec-convert SRC_DIR` (writes .safetensors), or fine-tune it with "
                                f"experiment=vision_finetune")
    return path


