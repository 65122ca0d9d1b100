"""Evaluation tasks: images, labels, class names and templates, with the validation split (10 % of train, seed 0)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devec import hub, store
from devec.runtime import built
from devec.vision import synthetic
from devec.vision.clip import normalize_images

DATA_CODE = ("devec.vision.synthetic", "devec.vision.data")  # a change to the renderers rebuilds the cached data


class ImageSet:
    """One split of a task: uint8 images (N, 3, H, W) in memory, or an HF dataset read through a transform."""

    def __init__(self, images: torch.Tensor | Any, labels: torch.Tensor, transform: Any = None,
                 image_key: str = "image") -> None:
        self.images, self.labels, self.transform, self.image_key = images, labels.long(), transform, image_key

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | torch.Tensor) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        if isinstance(self.images, torch.Tensor):
            return ImageSet(self.images[index], self.labels[index])
        return ImageSet(self.images.select(index.tolist()), self.labels[index], self.transform, self.image_key)

    def head(self, n: int | None) -> ImageSet:
        return self if n is None or n >= len(self) else self.subset(torch.arange(n))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized float images and labels at ``index``."""
        if isinstance(self.images, torch.Tensor):
            return normalize_images(self.images[index]), self.labels[index]
        rows = self.images.select(index.tolist())
        x = torch.stack([self.transform(img.convert("RGB")) for img in rows[self.image_key]])
        return x, self.labels[index]

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)) if shuffle \
            else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def sampler(self, batch_size: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled batches (training and test-time adaptation)."""
        epoch = 0
        while True:
            yield from self.batches(batch_size, shuffle=True, seed=seed * 100003 + epoch)
            epoch += 1


@dataclass
class Task:
    """A classification task of the task pool: splits, class names and zero-shot templates."""

    name: str
    classnames: list[str]
    templates: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet


def split_validation(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): ``fraction`` of the training set held out with ``seed`` (paper's validation split)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(fraction * n)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


@dataclass(kw_only=True)
class TaskPool:
    """The evaluation tasks of a data config (``_target_``: one subclass per source) and the experiments' task lists."""

    image_size: int
    val_fraction: float = 0.1
    val_seed: int = 0
    tasks: list[str] = field(default_factory=list)                 # Table 1
    generalization: dict[str, list[str]] | None = None            # Table 2: seen / unseen
    ablation_tasks: list[str] = field(default_factory=list)        # Table 3
    arithmetic_groups: list[dict[str, Any]] = field(default_factory=list)  # Figs. 2, 3: sources, target
    paper_ids: dict[str, str] = field(default_factory=dict)       # task -> the paper task it stands in for (tables)
    own_finetune: list[str] = field(default_factory=list)         # tasks experiment=vision_finetune trains

    def available(self) -> list[str]:
        """The task names this pool can load."""
        raise NotImplementedError

    def load(self, names: Sequence[str], cache_dir: Path, progress: Any = None) -> dict[str, Task]:
        """The tasks ``names``, in that order."""
        names = list(names)
        items = progress(names, desc="tasks") if progress else names
        return {n: self.task(n, Path(cache_dir)) for n in items}

    def task(self, name: str, cache_dir: Path) -> Task:
        """One task with its splits."""
        raise NotImplementedError


def load_tasks(data_cfg: Mapping[str, Any] | TaskPool, names: Sequence[str], cache_dir: Path, progress: Any = None
               ) -> dict[str, Task]:
    """The tasks ``names`` of the data config (a ``_target_`` config naming a :class:`TaskPool`, or one built)."""
    return task_pool(data_cfg).load(names, cache_dir, progress)


def task_pool(data_cfg: Mapping[str, Any] | TaskPool) -> TaskPool:
    """The :class:`TaskPool` the ``data`` config names with ``_target_`` (built as is when already one)."""
    return built(data_cfg, TaskPool, "data", "devec.vision.data.SyntheticTasks or HubTasks (conf/data/vision/)")


@dataclass(kw_only=True)
class SyntheticTasks(TaskPool):
    """Tasks devec renders itself (devec/vision/synthetic.py), cached by size and renderer code."""

    image_size: int = 32
    n_train: int = 1200          # per task; val_fraction of it is the validation split
    n_test: int = 400

    def available(self) -> list[str]:
        return list(synthetic.TASKS)

    def task(self, name: str, cache_dir: Path) -> Task:
        return _synthetic_task(dataclasses.asdict(self), name, cache_dir)


HF_TASK_KEYS = ("path", "name", "classnames", "templates", "train_split", "test_split", "image_key", "label_key",
                "classnames_file", "status")
"""The settings of one entry of ``data.tasks_hf`` (``classnames_file``: a text file of the dataset repository with
one class name a line, e.g. clip-benchmark's ``classnames.txt``; ``status``: verified | unverified, a record)."""


@dataclass(kw_only=True)
class HubTasks(TaskPool):
    """The paper's datasets through ``datasets`` (``tasks_hf.<name>``: hub id or path, splits, columns, classnames)."""

    image_size: int = 224
    test_limit: int | None = None            # evaluate on the first N test images per task (None: all)
    hf_cache: str | None = None
    default_templates: list[str] = field(default_factory=lambda: ["a photo of a {c}."])
    tasks_hf: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, spec in self.tasks_hf.items():
            for key in spec or {}:
                if key not in HF_TASK_KEYS:
                    raise ValueError(f"tasks_hf.{name}.{key}: unknown key; known keys: {', '.join(HF_TASK_KEYS)}")
            status = (spec or {}).get("status")
            if status not in (None, "verified", "unverified"):
                raise ValueError(f"data.tasks_hf.{name}.status={status!r}: use verified or unverified")

    def available(self) -> list[str]:
        return [n for n, t in self.tasks_hf.items() if t and t.get("path")]

    def task(self, name: str, cache_dir: Path) -> Task:
        return _hf_task(dataclasses.asdict(self), name, cache_dir)


def _synthetic_task(cfg: Mapping[str, Any], name: str, cache_dir: Path) -> Task:
    if name not in synthetic.TASKS:
        raise ValueError(f"data: unknown synthetic task {name!r}; available: {', '.join(synthetic.TASKS)}")
    spec = synthetic.TASKS[name]
    size, n_train, n_test = int(cfg["image_size"]), int(cfg["n_train"]), int(cfg["n_test"])
    key = store.config_key({"task": name, "size": size, "n_train": n_train, "n_test": n_test,
                      "code": store.code_version(*DATA_CODE)})
    path = cache_dir / "vision" / "data" / f"{name}-{key}.safetensors"
    found = store.load_entry(path, {"key": key})
    if found is not None:
        t = found[0]
    else:
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)
        xtr, ytr = synthetic.render(name, n_train, seed, "train", size)
        xte, yte = synthetic.render(name, n_test, seed + 1, "test", size)
        t = {"train_x": torch.from_numpy(xtr), "train_y": torch.from_numpy(ytr),
             "test_x": torch.from_numpy(xte), "test_y": torch.from_numpy(yte)}
        store.save_entry(path, t, {"key": key})
    full = ImageSet(t["train_x"], t["train_y"])
    tr, va = split_validation(len(full), float(cfg.get("val_fraction", 0.1)), int(cfg.get("val_seed", 0)))
    return Task(name, list(spec.classnames), list(spec.templates), full.subset(tr), full.subset(va),
                ImageSet(t["test_x"], t["test_y"]))


def pretraining_corpus(tasks: Sequence[str], per_task: int, image_size: int, cache_dir: Path, progress: Any = None,
                       context: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images and captions for pre-training the embedded CLIP (rendered apart from every task's train/test).

    ``context`` (``{scale: [lo, hi], backgrounds: [tasks]}``): each drawing is shrunk and pasted on another
    drawing (:func:`synthetic.render_in_context`), so the corpus holds the tasks' concepts but none of their
    full-frame images; None: the full-frame drawings themselves.
    """
    context = dict(context) if context else None
    key = store.config_key({"tasks": list(tasks), "n": per_task, "size": image_size, "context": context,
                            "code": store.code_version(*DATA_CODE)})
    path = cache_dir / "vision" / "data" / f"pretrain-{key}.safetensors"
    found = store.load_entry(path, {"key": key})
    if found is not None:
        return found[0]["x"], list(found[1]["captions"])
    xs, captions = [], []
    items = progress(list(tasks), desc="pre-training corpus") if progress else tasks
    for i, name in enumerate(items):
        if context:
            x, y = synthetic.render_in_context(name, per_task, 10_000 + i, image_size,
                                               tuple(context["scale"]), tuple(context["backgrounds"]))
        else:
            x, y = synthetic.render(name, per_task, 10_000 + i, "pretrain", image_size)
        rng = np.random.default_rng(20_000 + i)
        xs.append(torch.from_numpy(x))
        captions += [synthetic.caption(name, int(label), rng) for label in y]
    x = torch.cat(xs)
    store.save_entry(path, {"x": x}, {"key": key, "captions": captions})  # captions under the same checksum
    return x, captions


# ---------------------------------------------------------------- real scale: HF datasets

def _hf_task(cfg: Mapping[str, Any], name: str, cache_dir: Path) -> Task:
    """A task from the hub through ``datasets`` (data.tasks_hf.<name>: path, splits, columns, classnames)."""
    import datasets
    from open_clip.transform import image_transform

    spec = dict(cfg["tasks_hf"].get(name) or {})
    if not spec.get("path"):
        raise ValueError(f"data.tasks_hf.{name}.path is not set: give the hub id or local path of the {name} "
                         f"dataset (conf/data/vision/paper.yaml)")
    kw = {"cache_dir": cfg.get("hf_cache")} if cfg.get("hf_cache") else {}
    spec["path"] = hub.dataset(spec["path"], f"data.tasks_hf.{name}.path")  # the mirror's copy when one is set
    train = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("train_split", "train"), **kw)
    test = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("test_split", "test"), **kw)
    image_key, label_key = spec.get("image_key", "image"), spec.get("label_key", "label")
    classnames = list(spec.get("classnames") or [])
    if not classnames and spec.get("classnames_file"):
        classnames = _classnames_file(spec["path"], spec["classnames_file"], name, cfg.get("hf_cache"))
    if not classnames:
        feature = train.features[label_key]
        if not hasattr(feature, "names"):
            raise ValueError(f"{spec['path']}: label column {label_key!r} has no class names; set "
                             f"data.tasks_hf.{name}.classnames")
        classnames = [c.replace("_", " ") for c in feature.names]
    templates = list(spec.get("templates") or cfg.get("default_templates") or ["a photo of a {c}."])
    transform = image_transform(int(cfg.get("image_size", 224)), is_train=False)
    full = ImageSet(train, torch.tensor(train[label_key]), transform, image_key)
    tr, va = split_validation(len(full), float(cfg.get("val_fraction", 0.1)), int(cfg.get("val_seed", 0)))
    limit = cfg.get("test_limit")
    test_set = ImageSet(test, torch.tensor(test[label_key]), transform, image_key).head(limit)
    return Task(name, classnames, templates, full.subset(tr), full.subset(va), test_set)


def _classnames_file(repo: str, filename: str, name: str, cache: str | None) -> list[str]:
    """One class name a line of ``filename`` in the dataset repository ``repo`` (or directory)."""
    local = Path(repo) / filename
    if not local.exists():
        from huggingface_hub import hf_hub_download

        local = Path(hf_hub_download(repo, filename, repo_type="dataset", cache_dir=cache))
    names = [line.strip() for line in local.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"data.tasks_hf.{name}.classnames_file: {local} lists no class names")
    return names
