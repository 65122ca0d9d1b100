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
from devec.report.regime import above_chance_check, check_record, print_checks
from devec.resume import UnitStore, resolved_config
from devec.runtime import Run, built
from devec.style.grid import image_grid
from devec.style.loras import read_lora, save_lora
from devec.style.metrics import Evaluator, common_strength, paired_similarity, specific_strength, style_strength
from devec.style.mixing import Mixing, decompose_styles, load_components, set_mix
from devec.style.pipeline import generate, load_pipeline
from devec.vectors.sharing import save_sharing


def run(cfg: DictConfig, run: Run) -> dict:
    """Decompose the style vectors jointly, then generate the same prompts and seeds with each style alone,
    the vanilla mix and the unique-only mix at every coefficient of the schedule; grid and numbers per method.
    A mix of one style (Figs. 10-14) generates the base and that style alone."""
    pool = cfg.pool
    spec: StyleData = built(cfg.data, StyleData, "data", "devec.style.runner.StyleData (conf/data/style/)")
    method: Mixing = instantiate(cfg.method, _convert_="all")
    styles = OmegaConf.to_container(pool.styles, resolve=True)
    picked = select_styles(method.mix, styles)
    needed = picked if method.decompose_over == "mix" or len(picked) == 1 else [s["name"] for s in styles]
    with run.stage("load", "pool"):
        base_path, lora_paths = style_pool(pool, run, resume=bool(cfg.get("resume", True)), names=needed)
    with run.stage("task_vectors"):
        loras = [read_lora(lora_paths[s["name"]], name=s["name"], weight=s.get("weight", 1.0),
                           weight_name=s.get("weight_name")) for s in styles if s["name"] in needed]
    mixed = [next(lora for lora in loras if lora.name == n) for n in picked]
    summary: dict[str, Any] = {}
    dec = None
    if len(mixed) > 1:
        decomposition = OmegaConf.to_container(cfg.decomposition, resolve=True)
        dec = _restrict(decompose_styles(loras, decomposition, progress=True), picked)
        run.save_table("style_decomposition", dec.report, title="Joint DeVec of the style LoRAs, per module")
        summary = dec.summary()
        run.log({f"decomposition/{k}": v for k, v in summary.items()})
        summary["sharing"] = save_sharing(run, dec.report, "Joint sharing of the style LoRAs per module",
                                          label="style LoRAs")
        if method.save_components:
            for lora, unique in zip(mixed, dec.unique, strict=True):
                save_lora(run.path(f"unique_loras/{lora.name}.safetensors"), unique, lora.extras)

    offload = bool(pool.get("offload", False))
    with run.stage("load", "pipeline"):
        pipe = load_pipeline(base_path, dtype=pool.dtype, device="cpu" if offload else cfg.device)
        if offload:
            pipe.enable_model_cpu_offload(device=cfg.device)
    single = {lora.name: f"style__{lora.name}" for lora in mixed}
    wanted = {"style": "original", **(method.methods if dec is not None else {})}
    adapters = load_components(pipe, mixed, dec, wanted)
    prompts, seeds = list(spec.prompts), [int(s) for s in spec.seeds]  # a figure's, set by experiment=style_figure
    pairs = [(p, s) for p in prompts for s in seeds]

    def render(adapter_names: Sequence[str], weights: Sequence[float]) -> torch.Tensor:
        set_mix(pipe, adapter_names, weights)
        return generate(pipe, [p for p, _ in pairs], [s for _, s in pairs], int(spec.height), int(spec.width),
                        int(spec.steps), float(spec.guidance_scale), int(spec.max_sequence_length),
                        int(spec.batch_size))

    settings: list[tuple[str, str, float, list[str], list[float]]] = [("base", "base", 0.0, [], [])]
    settings += [(f"{lora.name} alone", "style", 1.0, [single[lora.name]], method.coefficients_at(1.0, [lora.weight]))
                 for lora in mixed]
    for gamma in method.gammas():
        for name, names in adapters.items():
            if name != "style":
                settings.append((f"{name} x{gamma:g}", name, gamma, names,
                                 method.coefficients_at(gamma, [lora.weight for lora in mixed])))
    store = _image_store(cfg, run, lora_paths)
    images = {}
    for label, _, _, names, weights in run.progress(settings, desc="generate"):
        unit = f"images | {label}"  # one unit per row of every grid: a killed run generates only what is left
        if cfg.get("resume", True) and store.done(unit):
            images[label] = store.load(unit)["images"]
        else:
            with run.stage("mixing", label):
                images[label] = store.save(unit, {"images": render(names, weights)})["images"]

    with run.stage("evaluation", "features"):
        evaluator = Evaluator(spec.metrics, run.cache_dir, int(spec.height), device=cfg.device, progress=run.progress)
        feats = evaluator.normalise({label: evaluator.features(x) for label, x in images.items()})
    rows = []
    for label, kind, gamma, _, _ in settings:
        row: dict[str, Any] = {"setting": label, "method": kind, "gamma": gamma,
                               evaluator.adherence_name: evaluator.adherence(images[label], [p for p, _ in pairs])}
        row.update(style_numbers(feats[label], feats["base"], {lora.name: feats[f"{lora.name} alone"]
                                                                 for lora in mixed}))
        rows.append(row)
        run.log({f"{label}/{k}": v for k, v in row.items() if isinstance(v, float)})
    run.save_table("style_mixing", rows, title="Style mixing: per-style strength in the mix and prompt adherence",
                   floatfmt=".3f")
    for p_idx, prompt in enumerate(prompts):
        sel = slice(p_idx * len(seeds), (p_idx + 1) * len(seeds))
        grid_rows = [(label, images[label][sel]) for label, *_ in settings]
        fig = image_grid(grid_rows, seeds, title=f'"{prompt}"  ({cfg.name})')
        run.save_figure(f"grid_{p_idx}_{_slug(prompt)}", fig)
    result = {"styles": [lora.name for lora in mixed], "decomposition": summary,
              "rows": rows, "by_method": _by_method(rows, evaluator.adherence_name),
              "effects": _print_effects(mix_effects(rows, method.methods, evaluator.adherence_name))}
    result["regime"] = mix_regime(result)
    print_checks(result["regime"])
    return result


def mix_regime(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The regime of Sec. 4.2's claim (:mod:`devec.report.regime`): the mixed styles share a subspace (Fig. 4's
    "overemphasis on shared components" presupposes one), in most decomposed modules more than random subspaces of
    the same ranks would. None without a decomposition."""
    dec = results.get("decomposition") or {}
    out = []
    if "modules_with_shared" in dec:
        out.append(check_record("shared_modules", "decomposed modules with a shared subspace",
                                dec["modules_with_shared"], low=1.0))
    sharing = above_chance_check("sharing_above_chance", "decomposed modules sharing above chance, %",
                                 dec.get("sharing"))
    return out + ([sharing] if sharing else [])


def style_numbers(mix: torch.Tensor, base: torch.Tensor, alone: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """One row's style numbers (features of the same prompt and seed pairs): per style its strength, its specific
    strength and its similarity; the weakest and mean strength, the weakest specific strength, the common strength."""
    row: dict[str, float] = {}
    styles = list(alone.values())
    for name, own in alone.items():
        row[f"strength/{name}"] = style_strength(mix, base, own)
        row[f"specific/{name}"] = specific_strength(mix, base, own, styles) if len(styles) > 1 else 1.0
        row[f"similarity/{name}"] = paired_similarity(mix, own)
    strengths = [row[f"strength/{n}"] for n in alone]
    row["min_strength"], row["mean_strength"] = min(strengths), sum(strengths) / len(strengths)
    row["min_specific"] = min(row[f"specific/{n}"] for n in alone)
    row["common_strength"] = common_strength(mix, base, styles)
    return row


STYLE_KEYS = ("name", "weight", "stands_for", "path", "weight_name", "file", "source", "download")
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

    def sources(self, cache_dir: Path, progress: Any = None, resume: bool = True, names: Sequence[str] | None = None
                ) -> tuple[str | Path, dict[str, str | Path]]:
        """The base pipeline and one LoRA source per style (at least the styles ``names``; all when None)."""
        raise NotImplementedError


@dataclass(kw_only=True)
class EmbeddedPool(StylePool):
    """A tiny Flux devec pre-trains, and one peft LoRA per style trained on top; cached by these settings."""

    seed: int = 0
    arch: dict[str, Any]
    base_train: dict[str, Any]
    lora_train: dict[str, Any]

    def sources(self, cache_dir, progress=None, resume=True, names=None):
        from devec.style.train import build_embedded

        return build_embedded(dataclasses.asdict(self), cache_dir, progress=progress, seed=self.seed,
                              resume=bool(resume), names=names)


@dataclass(kw_only=True)
class HubPool(StylePool):
    """FLUX.1 from the hub and the style LoRAs as files (``path``, or ``lora_dir``/``file``) or hub repositories."""

    base: str
    offload: bool = False            # enable_model_cpu_offload() for GPUs under ~40 GB
    lora_dir: str | None = None      # a folder holding each style's downloaded file under its ``file`` name

    def sources(self, cache_dir, progress=None, resume=True, names=None):
        wanted = [s["name"] for s in self.styles] if names is None else list(names)
        paths = {}
        for i, s in enumerate(self.styles):
            if s["name"] in wanted:
                paths[s["name"]] = self.location(i)
                if paths[s["name"]] is None:
                    raise ValueError(missing_lora(i, s))
        return self.base, paths

    def location(self, i: int) -> str | None:
        """Style ``i``'s LoRA: its ``path``, else ``lora_dir``/its ``file``; None when neither is set."""
        s = self.styles[i]
        if s.get("path") not in (None, "", "???"):
            return str(s["path"])
        if self.lora_dir and s.get("file"):
            return str(Path(self.lora_dir) / s["file"])
        return None


def missing_lora(i: int, style: Mapping[str, Any]) -> str:
    """What to download and which key to set for style ``i`` of a hub pool that has no LoRA file yet."""
    name, file = style["name"], style.get("file") or f"{style['name']}.safetensors"
    where = f"download {style['download']} by hand" if style.get("download") else "choose and download a LoRA"
    return (f"pool.styles.{i}.path ({name}) is not set: {where} (source: {style.get('source') or 'not recorded'}; "
            f"the run cannot reach Civitai), then set pool.lora_dir=<folder holding {file}> or "
            f"pool.styles.{i}.path=/loras/{file} (a .safetensors file or a hub repository id)")


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


def style_pool(pool: Mapping[str, Any] | StylePool, run: Run, resume: bool = True, names: Sequence[str] | None = None
               ) -> tuple[str | Path, dict[str, str | Path]]:
    """The base pipeline and one LoRA source per style of the pool ``pool`` names with ``_target_``: built and
    cached (embedded) or as configured (hub, files), for the styles ``names`` (all when None). Embedded LoRAs are
    units: ``resume=False`` trains them again."""
    spec = built(pool_config(pool), StylePool, "pool", "devec.style.runner.EmbeddedPool or HubPool (conf/pool/style/)")
    return spec.sources(run.cache_dir, progress=run.progress, resume=resume, names=names)


def pool_config(pool: Any) -> Any:
    """The pool config with every unset style ``path`` (``???``) as null, so that it builds: a hub pool then finds
    the file in ``lora_dir`` or names what to download (:func:`missing_lora`) for the styles a run needs."""
    if not isinstance(pool, DictConfig) or "styles" not in pool:
        return pool
    node = OmegaConf.create(OmegaConf.to_container(pool, resolve=True))
    for style in node.styles:
        if isinstance(style, DictConfig) and "path" in style.keys() and OmegaConf.is_missing(style, "path"):
            style.path = None
    return node


def _image_store(cfg: DictConfig, run: Run, lora_paths: Mapping[str, str | Path]) -> UnitStore:
    """The units of this run's images, keyed by its config, devec's code and the bytes of every local LoRA file."""
    config = resolved_config(cfg)
    config["lora_sha256"] = {n: io.sha256_file(p) for n, p in sorted(lora_paths.items()) if Path(p).is_file()}
    return UnitStore.for_config(run.cache_dir, config)


def select_styles(mix: Any, styles: Sequence[Mapping[str, Any]]) -> list[str]:
    """The pool names of the styles ``method.mix`` picks (a style's name, or a paper style it stands for at
    embedded scale), in the order given; ``all``: every style of the pool."""
    names = [str(s["name"]) for s in styles]
    if mix in (None, "all"):
        return names
    by_name = {n: n for n in names}
    for s in styles:
        for alias in s.get("stands_for") or []:
            by_name.setdefault(str(alias), str(s["name"]))
    unknown = [m for m in mix if m not in by_name]
    if unknown:
        raise ValueError(f"method.mix names {unknown}, not in pool.styles ({sorted(by_name)})")
    picked = list(dict.fromkeys(by_name[m] for m in mix))
    if len(picked) < len(list(mix)):
        raise ValueError(f"method.mix={list(mix)}: two of these are the same style of this pool ({picked}); "
                         f"give each paper style its own analogue in pool.styles[*].stands_for")
    return picked


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
        out[f"{r['method']}@{r['gamma']:g}"] = {k: r[k] for k in ("min_strength", "mean_strength", "min_specific",
                                                                  "common_strength", adherence)}
    return out


LOWER_IS_BETTER = ("common_strength",)
"""Style numbers where the unique mix improves on the plain one by being lower: the shared change counted fewer
times over (Sec. 4.2: the plain mix over-emphasises what the styles share)."""


def mix_effects(rows: Sequence[Mapping[str, Any]], methods: Mapping[str, str], adherence: str
                ) -> list[dict[str, Any]]:
    """Each unique mix against the plain mix (``methods`` ids with components unique / original) at each gamma, for
    every style number of the row, then the prompt adherence ``adherence`` (records of devec.report.effects):
    higher is better except LOWER_IS_BETTER."""
    from devec.report.effects import effect_record

    plain_ids = [m for m, comp in methods.items() if comp == "original"]
    unique_ids = [m for m, comp in methods.items() if comp == "unique"]
    by_key = {(r["method"], r["gamma"]): r for r in rows}
    out = []
    for (mid, gamma), row in by_key.items():
        base = by_key.get((plain_ids[0], gamma)) if plain_ids else None
        if mid not in unique_ids or base is None:
            continue
        metrics = [k for k, v in row.items() if k not in ("gamma", adherence) and isinstance(v, float) and k in base]
        metrics.append(adherence)
        out += [effect_record(f"{mid}@{gamma:g}", f"{mid} mix vs {plain_ids[0]} mix x{gamma:g}", k, row[k], base[k],
                              k not in LOWER_IS_BETTER) for k in metrics]
    return out


def _print_effects(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from devec.report.effects import print_effects

    print_effects(records)
    return records


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:40].strip("_")
