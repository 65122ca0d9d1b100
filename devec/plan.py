"""What a run will fetch and do, told before it does it (``scale=paper`` runs, and ``plan_only=true``).

:func:`make` reads the composed config: the checkpoints and datasets the experiment's pool and data name (hub ids,
local paths or other downloads), each with its size from the hub's metadata when the hub answers within
``timeout`` seconds ("size unknown (hub unreachable)" otherwise, or with ``HF_HUB_OFFLINE=1``), whether it is
already in the hub cache or the mirror, where it goes, and the stages that follow. :func:`render` prints it.
Each domain describes its fetches in one function here (:data:`DESCRIBERS`, by the runner's module), reading the
same config keys its pool and data read.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from devec import hub

TIMEOUT = 5.0
"""Seconds the whole size look-up may take (all repositories together); the plan never waits longer."""


@dataclass(frozen=True)
class Fetch:
    """One thing a run reads: a hub repository (``kind`` model or dataset), a local path, or another download."""

    ref: str
    key: str                                  # the config key that holds ``ref``
    kind: str = "model"                       # model | dataset | other (fetched by a library) | unset
    patterns: tuple[str, ...] | None = None   # the files of a model repository that are downloaded


@dataclass
class Item:
    """A :class:`Fetch` with what the plan found out about it."""

    fetch: Fetch
    where: str = ""
    status: str = ""
    size: int | None = None


@dataclass
class Plan:
    """The run's fetches (as :class:`Item`), where downloads go, and the stages that follow."""

    experiment: str
    items: list[Item]
    stages: list[str]
    hub_cache: str
    mirror: str | None
    hub_reachable: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "hub_cache": self.hub_cache, "mirror": self.mirror,
                "hub_reachable": self.hub_reachable, "stages": self.stages, "notes": self.notes,
                "items": [{**asdict(i.fetch), "patterns": list(i.fetch.patterns or []), "where": i.where,
                           "status": i.status, "size": i.size} for i in self.items]}

    def total(self) -> tuple[int, int]:
        """(bytes still to download with a known size, number of downloads of unknown size)."""
        pending = [i for i in self.items if i.status == "to download"]
        return sum(i.size or 0 for i in pending), sum(1 for i in pending if i.size is None)


def wanted(cfg: DictConfig) -> bool:
    """True when the run should print its plan first: ``plan_only=true``, or a paper-scale run."""
    scale = cfg.get("scale")
    return bool(cfg.get("plan_only", False)) or (isinstance(scale, Mapping) and scale.get("name") == "paper")


def make(cfg: DictConfig, timeout: float = TIMEOUT) -> Plan:
    """The plan of the run ``cfg`` describes; the hub is asked for sizes for at most ``timeout`` seconds."""
    from huggingface_hub import constants

    runner = str(OmegaConf.select(cfg, "runner._target_") or "")
    describe = next((f for prefix, f in DESCRIBERS.items() if runner.startswith(prefix)), None)
    fetches = _unique(describe(cfg) if describe else [])
    items = [_locate(f) for f in fetches]
    reachable = _sizes([i for i in items if i.status == "to download"], timeout)
    stages = STAGES.get(runner.removeprefix("devec."), ["run"])
    device = OmegaConf.select(cfg, "decomposition.device") or cfg.get("device", "cpu")
    mirror = hub.mirror()
    return Plan(str(cfg.get("name", "")), items, [s.format(device=device) for s in stages],
                str(constants.HF_HUB_CACHE), str(mirror) if mirror else None, reachable)


def render(plan: Plan) -> str:
    """The plan as text for the terminal."""
    lines = [f"Plan of {plan.experiment or 'this run'}:"]
    where = f"the hub mirror {plan.mirror}" if plan.mirror else f"the Hugging Face cache {plan.hub_cache}"
    lines.append(f"  hub repositories are read from {where}")
    for item in plan.items:
        hosted = item.status in ("to download", "cached")
        size = f", {_size(item.size, plan.hub_reachable)}" if hosted else ""
        lines.append(f"  - [{item.fetch.kind}] {item.fetch.ref} ({item.fetch.key}): {item.status}{size}"
                     + (f" -> {item.where}" if item.where else ""))
    known, unknown = plan.total()
    lines.append(f"  to download: {_bytes(known)}" + (f" + {unknown} of unknown size" if unknown else "")
                 + ("" if plan.hub_reachable is not False else " (hub unreachable: sizes unknown)"))
    lines.append("  then: " + " -> ".join(plan.stages))
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- where each fetch is

def _locate(fetch: Fetch) -> Item:
    """Local path, mirror entry, cached hub repository or a download to come."""
    if fetch.kind == "other":
        return Item(fetch, status="fetched by its library at run time")
    if fetch.kind == "unset":
        return Item(fetch, status=f"MISSING: not set (set {fetch.key}; see the note)")
    path = Path(fetch.ref).expanduser()
    if path.exists():
        return Item(fetch, str(path), "local")
    if not hub.is_repo_id(fetch.ref):
        return Item(fetch, status=f"MISSING: no such local path (set {fetch.key})")
    if hub.mirror() is not None:
        local = hub.mirror_path(fetch.ref)
        return Item(fetch, str(local), "in the mirror" if local.is_dir() else "MISSING from the mirror")
    cached = _cached().get((fetch.kind, fetch.ref))
    if cached is not None:
        return Item(fetch, cached[0], "cached", cached[1])
    return Item(fetch, status="to download")


_CACHE: dict[tuple[str, str], tuple[str, int]] | None = None


def _cached() -> dict[tuple[str, str], tuple[str, int]]:
    """``{(kind, repo id): (folder, bytes on disk)}`` of the hub cache (read once)."""
    global _CACHE
    if _CACHE is None:
        from huggingface_hub import scan_cache_dir

        try:
            info = scan_cache_dir()
            _CACHE = {(r.repo_type, r.repo_id): (str(r.repo_path), r.size_on_disk) for r in info.repos}
        except Exception:  # noqa: BLE001 - no cache yet, or an unreadable one: nothing is cached
            _CACHE = {}
    return _CACHE


def _sizes(items: Sequence[Item], timeout: float) -> bool | None:
    """Fill each item's size from the hub's file metadata; False when the hub did not answer (or is offline)."""
    if not items:
        return None
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or offline():
        return False
    pool = ThreadPoolExecutor(max_workers=min(8, len(items)))
    futures = {pool.submit(_repo_size, i.fetch, timeout): i for i in items}
    done, _ = wait(futures, timeout=timeout)
    pool.shutdown(wait=False, cancel_futures=True)
    answered = False
    for future in done:
        size = future.result()
        if size is not None:
            futures[future].size, answered = size, True
    return answered


def _repo_size(fetch: Fetch, timeout: float) -> int | None:
    """Bytes of the files of ``fetch`` a run downloads, from the hub's metadata; None when it does not answer."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        get = api.dataset_info if fetch.kind == "dataset" else api.model_info
        info = get(fetch.ref, files_metadata=True, timeout=timeout)
    except Exception:  # noqa: BLE001 - unreachable, gated, missing: the size is unknown
        return None
    files = [(s.rfilename, s.size or 0) for s in info.siblings or []]
    if fetch.patterns:
        files = [(n, b) for n, b in files if any(fnmatch.fnmatch(n, p) for p in fetch.patterns)]
    return sum(b for _, b in files)


# ---------------------------------------------------------------- what each domain fetches

def _vision(cfg: DictConfig) -> list[Fetch]:
    from devec.vision.pool import HUB_PATTERNS

    v = cfg.get("vision") or {}
    merged = list(v.get("tasks") or [])
    evaluated = merged + list(v.get("unseen") or [])
    if cfg.get("finetune") is not None:  # vision_finetune: the pre-trained model and the data of its tasks
        merged, evaluated = [], list((cfg.get("finetune") or {}).get("tasks") or [])
    ablation = v.get("ablation") or {}
    merged += list(ablation.get("extra") or [])
    for group in (v.get("arithmetic") or {}).get("groups") or []:
        merged += list(group.get("sources") or [])
        evaluated += list(group.get("sources") or []) + [str(group.get("target"))]
    pool, data = cfg.get("pool") or {}, cfg.get("data") or {}
    patterns = tuple(HUB_PATTERNS)
    out = [Fetch(str(pool["pretrained"]), "pool.pretrained", "model", patterns)] if pool.get("pretrained") else []
    if pool.get("text_pretrained"):
        out.append(Fetch(f"open_clip {pool.get('arch')} pretrained={pool['text_pretrained']} (text tower, only when "
                         f"pool.pretrained has none)", "pool.text_pretrained", "other"))
    finetuned = pool.get("finetuned") or {}
    out += [Fetch(str(finetuned[t]), f"pool.finetuned.{t}", "model", patterns) for t in merged if t in finetuned]
    hf = data.get("tasks_hf") or {}
    out += [Fetch(str(hf[t]["path"]), f"data.tasks_hf.{t}.path", "dataset") for t in evaluated
            if t in hf and hf[t].get("path")]
    return out


def _toxicity(cfg: DictConfig) -> list[Fetch]:
    from devec.toxicity.pool import HUB_PATTERNS, _used

    pool, data = cfg.get("pool") or {}, cfg.get("data") or {}
    out = []
    if pool.get("base"):
        out.append(Fetch(str(pool["base"]), "pool.base", "model", tuple(HUB_PATTERNS)))
    if pool.get("tokenizer"):
        out.append(Fetch(str(pool["tokenizer"]), "pool.tokenizer", "model", tuple(HUB_PATTERNS)))
    if str(OmegaConf.select(cfg, "runner._target_") or "").endswith("train_toxic_dora"):
        datasets = (pool.get("recipe") or {}).get("datasets") or {}
        return out + [Fetch(str(d["path"]), f"pool.recipe.datasets.{n}.path", "dataset")
                      for n, d in datasets.items() if d.get("path")]
    members = pool.get("members") or {}
    toxic = [str(pool.get("toxic"))] + [str(m) for m in (pool.get("toxic_vectors") or {}).values()]
    used = _used(members, str(pool.get("toxic")), pool.get("subpools") or {})
    for name in dict.fromkeys([*toxic, *used]):
        if name in members:
            m = members[name]
            patterns = tuple(HUB_PATTERNS) + (("*.bin",) if m.get("allow_bin") else ())
            out.append(Fetch(str(m["repo"]), f"pool.members.{name}.repo", "model", patterns))
    for name, p in (data.get("prompts") or {}).items():
        if p.get("source") == "hub" and p.get("path"):
            out.append(Fetch(str(p["path"]), f"data.prompts.{name}.path", "dataset"))
        elif p.get("source") == "toxigen_files":
            out.append(Fetch(str(p.get("root")), f"data.prompts.{name}.root", "other"))
        out += _classifiers(p.get("classifiers") or [], f"data.prompts.{name}.classifiers")
    out += _classifiers(data.get("classifiers") or [], "data.classifiers")
    tasks = [str(t["name"]) for t in ((data.get("control") or {}).get("tasks") or [])]
    if tasks and not (data.get("control") or {}).get("embedded_tasks"):
        out.append(Fetch(f"lm-eval tasks {', '.join(tasks)}", "data.control.tasks", "other"))
    return out


def _classifiers(specs: Iterable[Any], key: str) -> list[Fetch]:
    out = []
    for i, c in enumerate(specs):
        if c.get("model"):
            out.append(Fetch(str(c["model"]), f"{key}.{i}.model", "model"))
        if c.get("checkpoint"):
            out.append(Fetch(f"detoxify {c['checkpoint']}", f"{key}.{i}.checkpoint", "other"))
        if c.get("fallback"):
            out += [Fetch(f.ref, f.key.replace(".fallback.0.", ".fallback."), f.kind, f.patterns)
                    for f in _classifiers([c["fallback"]], f"{key}.{i}.fallback")]
    return out


def _style(cfg: DictConfig) -> list[Fetch]:
    pool, data = cfg.get("pool") or {}, cfg.get("data") or {}
    out = [Fetch(str(pool["base"]), "pool.base", "model")] if pool.get("base") else []
    for i, s in enumerate(pool.get("styles") or []):
        path = OmegaConf.select(cfg, f"pool.styles.{i}.path", default=None, throw_on_missing=False)
        if path not in (None, "", "???"):
            out.append(Fetch(str(path), f"pool.styles.{i}.path", "model"))
        elif pool.get("lora_dir") and s.get("file"):
            out.append(Fetch(str(Path(str(pool["lora_dir"])) / str(s["file"])), f"pool.styles.{i}.file", "model"))
        elif pool.get("base"):  # a hub pool's style without a file yet: downloaded by hand (Civitai)
            out.append(Fetch(f"{s.get('name')} LoRA ({s.get('download') or 'no download recorded'})",
                             f"pool.styles.{i}.path", "unset"))
    clip = (data.get("metrics") or {}).get("clip_model")
    if clip:
        out.append(Fetch(str(clip), "data.metrics.clip_model", "model"))
    return out


def _checkpoints(cfg: DictConfig) -> list[Fetch]:
    pool = cfg.get("pool") or {}
    out = [Fetch(str(pool["pretrained"]), "pool.pretrained")] if pool.get("pretrained") else []
    return out + [Fetch(str(f), f"pool.finetuned.{i}") for i, f in enumerate(pool.get("finetuned") or [])]


DESCRIBERS: dict[str, Callable[[DictConfig], list[Fetch]]] = {
    "devec.vision.": _vision, "devec.toxicity.": _toxicity, "devec.style.": _style, "devec.vectors.": _checkpoints,
}
"""The fetches of each domain's runs, by the runner's module."""

_DECOMPOSE = "decomposition ({device})"
STAGES: dict[str, list[str]] = {
    "vision.runner.table1": ["load", "task vectors", _DECOMPOSE, "merging (each method)", "evaluation"],
    "vision.runner.table2": ["load", "task vectors", _DECOMPOSE, "merging (each method)",
                             "evaluation (seen and unseen)"],
    "vision.runner.table3": ["load", "task vectors", _DECOMPOSE + " per target", "training (coefficients)",
                             "evaluation"],
    "vision.runner.fig2_fig3": ["load", "task vectors", _DECOMPOSE + " per group", "evaluation (each coefficient)"],
    "toxicity.runner.table4": ["load", "task vectors (streamed, per layer)", _DECOMPOSE,
                               "evaluation (generation, classifiers, lm-eval)"],
    "toxicity.runner.fig5_negation_coefficient": ["load", "task vectors", _DECOMPOSE + " per sub-pool",
                                                  "evaluation (each lambda)"],
    "toxicity.runner.fig6_tau": ["load", "task vectors", _DECOMPOSE + " per tau", "evaluation (each lambda)"],
    "toxicity.runner.train_toxic_dora": ["load", "training (DoRA, each dataset)"],
    "style.runner.run": ["load", "task vectors", _DECOMPOSE, "mixing (image generation)", "evaluation"],
    "vectors.runner.run": ["load", _DECOMPOSE, "save"],
    "vision.finetune.finetune": ["load", "training (fine-tuning each task)", "evaluation"],
}
"""The stages each runner (``runner._target_`` without ``devec.``) goes through, in order (``Run.stage`` names)."""


# ---------------------------------------------------------------- helpers

def _unique(fetches: Iterable[Fetch]) -> list[Fetch]:
    """Each reference once (the first key that names it)."""
    seen: dict[tuple[str, str], Fetch] = {}
    for f in fetches:
        seen.setdefault((f.kind, f.ref), f)
    return list(seen.values())


def _size(size: int | None, reachable: bool | None) -> str:
    if size is not None:
        return _bytes(size)
    return "size unknown (hub unreachable)" if reachable is False else "size unknown"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def offline() -> bool:
    """True when huggingface_hub is told not to reach the hub (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
