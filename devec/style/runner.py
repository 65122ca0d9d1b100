"""Style mixing with unique components (Sec. 4.2, Figs. 4, 10-17): vanilla sum of style LoRAs vs unique parts only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from devec import io
from devec.resume import UnitStore, resolved_config
from devec.runtime import Run, built
from devec.style.grid import image_grid
from devec.style.loras import StyleLoRA, read_lora, save_lora
from devec.style.metrics import Evaluator, common_strength, paired_similarity, style_strength
from devec.style.mixing import Mixing, decompose_styles, load_components, set_mix
from devec.style.pipeline import generate, load_pipeline


def run(cfg: DictConfig, run: Run) -> dict:
    """Decompose the style vectors jointly, then generate the same prompts and seeds with each style alone,
    the vanilla mix and the unique-only mix at every coefficient of the schedule; grid and numbers per method."""
    pool = cfg.pool
    spec: StyleData = built(cfg.data, StyleData, "data", "devec.style.runner.StyleData (conf/data/style/)")
    method: Mixing = instantiate(cfg.method, _convert_="all")
    base_path, lora_paths = style_pool(pool, run, resume=bool(cfg.get("resume", True)))
    loras = [read_lora(lora_paths[s.name], name=s.name, weight=s.get("weight", 1.0), weight_name=s.get("weight_name"))
             for s in pool.styles]
    mixed = _select(loras, method.mix, OmegaConf.to_container(pool.styles, resolve=True))
    over = loras if method.decompose_over == "pool" else mixed
    decomposition = OmegaConf.to_container(cfg.decomposition, resolve=True)
    dec = decompose_styles(over, decomposition, progress=True)
    dec = _restrict(dec, [lora.name for lora in mixed])
    run.save_table("style_decomposition", dec.report, title="Joint DeVec of the style LoRAs, per module")
    summary = dec.summary()
    run.log({f"decomposition/{k}": v for k, v in summary.items()})
    if method.save_components:
        for lora, unique in zip(mixed, dec.unique, strict=True):
            save_lora(run.path(f"unique_loras/{lora.name}.safetensors"), unique, lora.extras)

    offload = bool(pool.get("offload", False))
    pipe = load_pipeline(base_path, dtype=pool.dtype, device="cpu" if offload else cfg.device)
    if offload:
        pipe.enable_model_cpu_offload(device=cfg.device)
    single = {lora.name: f"style__{lora.name}" for lora in mixed}
    adapters = load_components(pipe, mixed, dec, {"style": "original", **method.methods})
    prompts, seeds = list(spec.prompts), [int(s) for s in spec.seeds]  # a figure's, set by experiment=style_figure
    pairs = [(p, s) for p in prompts for s in seeds]

    def render(adapter_names: Sequence[str], weights: Sequence[float]) -> torch.Tensor:
        set_mix(pipe, adapter_names, weights)
        return generate(pipe, [p for p, _ in pairs], [s for _, s in pairs], int(spec.height), int(spec.width),
                        int(spec.steps), float(spec.guidance_scale), int(spec.max_sequence_length),
                        int(spec.batch_size))

    settings: list[tuple[str, str, float, list[str], list[float]]] = [("base", "base", 0.0, [], [])]
    settings += [(f"{lora.name} alone", "style", 1.0, [single[lora.name]], [lora.weight]) for lora in mixed]
    for gamma in method.schedule:
        for name, names in adapters.items():
            if name != "style":
                settings.append((f"{name} x{float(gamma):g}", name, float(gamma), names,
                                 [float(gamma) * lora.weight for lora in mixed]))
    store = _image_store(cfg, run, lora_paths)
    images = {}
    for label, _, _, names, weights in run.progress(settings, desc="generate"):
        unit = f"images | {label}"  # one unit per row of every grid: a killed run generates only what is left
        if cfg.get("resume", True) and store.done(unit):
            images[label] = store.load(unit)["images"]
        else:
            images[label] = store.save(unit, {"images": render(names, weights)})["images"]

    evaluator = Evaluator(spec.metrics, run.cache_dir, int(spec.height), device=cfg.device, progress=run.progress)
    feats = evaluator.normalise({label: evaluator.features(x) for label, x in images.items()})
    rows = []
    for label, kind, gamma, _, _ in settings:
        row: dict[str, Any] = {"setting": label, "method": kind, "gamma": gamma,
                               evaluator.adherence_name: evaluator.adherence(images[label], [p for p, _ in pairs])}
        alone = [feats[f"{lora.name} alone"] for lora in mixed]
        for lora, own in zip(mixed, alone, strict=True):
            row[f"strength/{lora.name}"] = style_strength(feats[label], feats["base"], own)
            row[f"similarity/{lora.name}"] = paired_similarity(feats[label], own)
        strengths = [row[f"strength/{lora.name}"] for lora in mixed]
        row["min_strength"], row["mean_strength"] = min(strengths), sum(strengths) / len(strengths)
        row["common_strength"] = common_strength(feats[label], feats["base"], alone)
        rows.append(row)
        run.log({f"{label}/{k}": v for k, v in row.items() if isinstance(v, float)})
    run.save_table("style_mixing", rows, title="Style mixing: per-style strength in the mix and prompt adherence",
                   floatfmt=".3f")
    for p_idx, prompt in enumerate(prompts):
        sel = slice(p_idx * len(seeds), (p_idx + 1) * len(seeds))
        grid_rows = [(label, images[label][sel]) for label, *_ in settings]
        fig = image_grid(grid_rows, seeds, title=f'"{prompt}"  ({cfg.name})')
        run.save_figure(f"grid_{p_idx}_{_slug(prompt)}", fig)
    return {"styles": [lora.name for lora in mixed], "decomposition": summary,
            "rows": rows, "by_method": _by_method(rows, evaluator.adherence_name)}


STYLE_KEYS = ("name", "weight", "stands_for", "path", "weight_name")
"""The settings of one entry of ``pool.styles``."""


@dataclass(kw_only=True)
class StylePool:
    """A style pool config (``_target_``: :class:`EmbeddedPool` or :class:`HubPool`); the class is its schema."""

    styles: list[dict[str, Any]]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for i, style in enumerate(self.styles):
            for key in style:
                if key not in STYLE_KEYS:
                    raise ValueError(f"styles.{i}.{key}: unknown key; known keys: {', '.join(STYLE_KEYS)}")

    def sources(self, cache_dir: Path, progress: Any = None, resume: bool = True
                ) -> tuple[str | Path, dict[str, str | Path]]:
        """The base pipeline and one LoRA source per style."""
        raise NotImplementedError


@dataclass(kw_only=True)
class EmbeddedPool(StylePool):
    """A tiny Flux devec pre-trains, and one peft LoRA per style trained on top; cached by these settings."""

    seed: int = 0
    arch: dict[str, Any]
    base_train: dict[str, Any]
    lora_train: dict[str, Any]

    def sources(self, cache_dir, progress=None, resume=True):
        from devec.style.train import build_embedded

        return build_embedded(dataclasses.asdict(self), cache_dir, progress=progress, seed=self.seed,
                              resume=bool(resume))


@dataclass(kw_only=True)
class HubPool(StylePool):
    """FLUX.1 from the hub and the style LoRAs as files or hub repositories."""

    base: str
    offload: bool = False            # enable_model_cpu_offload() for GPUs under ~40 GB

    def sources(self, cache_dir, progress=None, resume=True):
        paths = {}
        for i, s in enumerate(self.styles):
            if s.get("path") in (None, "", "???"):
                raise ValueError(f"pool.styles.{i}.path ({s['name']}) is not set: a .safetensors LoRA file (e.g. "
                                 f"from Civitai) or a hub repository id")
            paths[s["name"]] = s["path"]
        return self.base, paths


@dataclass(kw_only=True)
class StyleData:
    """What the mix is generated on (prompts, seeds, sampler) and how it is scored (``metrics``)."""

    prompts: list[str]
    seeds: list[int]
    figures: dict[str, Any] = field(default_factory=dict)   # experiment=style_figure: mix, prompts, seeds per figure
    height: int
    width: int
    steps: int
    guidance_scale: float = 0.0
    max_sequence_length: int
    batch_size: int = 1
    metrics: dict[str, Any]


def style_pool(pool: Mapping[str, Any] | StylePool, run: Run, resume: bool = True
               ) -> tuple[str | Path, dict[str, str | Path]]:
    """The base pipeline and one LoRA source per style of the pool ``pool`` names with ``_target_``: built and
    cached (embedded) or as configured (hub, files). Embedded LoRAs are units: ``resume=False`` trains them again."""
    for i, s in enumerate([] if isinstance(pool, StylePool) else pool.get("styles") or []):
        if OmegaConf.is_missing(s, "path") if isinstance(s, DictConfig) else s.get("path") == "???":
            raise ValueError(f"pool.styles.{i}.path ({s['name']}) is not set: a .safetensors LoRA file (e.g. from "
                             f"Civitai) or a hub repository id")
    spec = built(pool, StylePool, "pool", "devec.style.runner.EmbeddedPool or HubPool (conf/pool/style/)")
    return spec.sources(run.cache_dir, progress=run.progress, resume=resume)


def _image_store(cfg: DictConfig, run: Run, lora_paths: Mapping[str, str | Path]) -> UnitStore:
    """The units of this run's images, keyed by its config, devec's code and the bytes of every local LoRA file."""
    config = resolved_config(cfg)
    config["lora_sha256"] = {n: io.sha256_file(p) for n, p in sorted(lora_paths.items()) if Path(p).is_file()}
    return UnitStore.for_config(run.cache_dir, config)


def _select(loras: Sequence[StyleLoRA], mix: Any, styles: Sequence[Mapping[str, Any]]) -> list[StyleLoRA]:
    """The styles named by ``method.mix`` (a style's name, or a paper style it stands for at embedded scale)."""
    if mix in (None, "all"):
        return list(loras)
    by_name = {lora.name: lora for lora in loras}
    for s in styles:
        for alias in s.get("stands_for") or []:
            by_name.setdefault(alias, by_name[s["name"]])
    unknown = [m for m in mix if m not in by_name]
    if unknown:
        raise ValueError(f"method.mix names {unknown}, not in pool.styles ({sorted(by_name)})")
    picked = list(dict.fromkeys(by_name[m].name for m in mix))
    if len(picked) < 2:
        raise ValueError(f"method.mix={list(mix)} selects fewer than two distinct styles of this pool: {picked}")
    return [next(lora for lora in loras if lora.name == n) for n in picked]


def _restrict(dec, names: Sequence[str]):
    """Keep the components of the mixed styles (the decomposition may have run over the whole pool)."""
    idx = [dec.names.index(n) for n in names]
    dec.names = list(names)
    dec.unique = [dec.unique[i] for i in idx]
    dec.shared = [dec.shared[i] for i in idx]
    return dec


def _by_method(rows: Sequence[Mapping[str, Any]], adherence: str) -> dict[str, dict[str, float]]:
    out = {}
    for r in rows:
        if r["method"] in ("base", "style"):
            continue
        out[f"{r['method']}@{r['gamma']:g}"] = {"min_strength": r["min_strength"], "mean_strength": r["mean_strength"],
                                                "common_strength": r["common_strength"], adherence: r[adherence]}
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:40].strip("_")
