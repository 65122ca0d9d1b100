"""``devec experiment=decompose``: shared / unique / merged task vectors of your own checkpoints, as safetensors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from devec import io  # noqa: E402
from devec.runtime import Run  # noqa: E402
from devec.vectors.demo import demo_checkpoints  # noqa: E402
from devec.vectors.driver import DecompositionSettings, decompose_model, store_for  # noqa: E402
from devec.vectors.model import TaskVectorPool  # noqa: E402


@dataclass(kw_only=True)
class CheckpointPool:
    """The ``pool`` of ``experiment=decompose``: your checkpoints, or (no paths) a small demo pool in the cache."""

    pretrained: str | None = None   # safetensors file, HF directory, or weights-only .pt state dict
    finetuned: list[str] = field(default_factory=list)   # checkpoints of the same architecture
    target: int = 0                 # iterative mode: the vector whose unique part is wanted
    demo: dict[str, int] | None = None   # demo_checkpoints() arguments, used when pretrained is null

    def load(self, cache_dir: str | Path) -> TaskVectorPool:
        """The task-vector pool, read lazily (names, shapes and formats checked before any long work)."""
        if self.pretrained is None:
            if not self.demo:
                raise ValueError("set pool.pretrained=PATH and pool.finetuned=[PATH,PATH,...] (safetensors files, "
                                 "HF directories or weights-only .pt state dicts)")
            self.pretrained, self.finetuned = demo_checkpoints(Path(cache_dir) / "demo_checkpoints", **self.demo)
        return TaskVectorPool(self.pretrained, self.finetuned)


def run(cfg: DictConfig, run: Run) -> dict:
    """Load the pool, decompose every parameter, write the components and the per-layer report.

    Finished layers are stored as units keyed by the checkpoints' content, the settings and the code: a killed
    run started again resumes at its first unfinished layer; ``resume=false`` recomputes every layer.
    """
    from hydra.utils import instantiate

    spec: CheckpointPool = instantiate(cfg.pool, _convert_="all")
    settings = DecompositionSettings.from_config(cfg.decomposition, target=spec.target)
    pool = spec.load(run.cache_dir)
    pretrained, finetuned = spec.pretrained, spec.finetuned
    store = store_for(run.cache_dir / "decompose", pool, settings)
    md = decompose_model(pool, settings, basis_fn=settings.basis_fn(run.cache_dir), store=store,
                         resume=bool(cfg.get("resume", True)), progress=run.progress)
    written = _write_components(run, md, cfg.decomposition.mode, cfg.decomposition.tau, cfg.decomposition.rank)
    rows = [{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()} for r in md.report]
    run.save_table("layers", rows, title="Per-layer report: kept ranks, shared dimension, energy", floatfmt=".3f")
    decomposed = [r for r in md.report if r["action"] == "decompose"]
    if decomposed:
        run.save_figure("layers", _plot(decomposed, cfg.decomposition.mode))
    return {"pretrained": str(pretrained), "finetuned": [str(f) for f in finetuned], "files": written,
            "decomposed_layers": len(decomposed), "layers": len(md.report),
            "mean_shared_dim": sum(r["shared_dim"] for r in decomposed) / max(1, len(decomposed)),
            "decomposition": OmegaConf.to_container(cfg.decomposition, resolve=True)}


def _write_components(run: Run, md, mode: str, tau: float, rank: str) -> list[str]:
    meta = {"devec_mode": mode, "tau": str(tau), "rank": str(rank)}
    out: dict[str, dict] = {}
    if mode == "joint":
        for i, (s, u) in enumerate(zip(md.shared, md.unique, strict=False)):
            out[f"shared_{i}.safetensors"], out[f"unique_{i}.safetensors"] = s, u
        out["merged_shared.safetensors"] = md.merged_shared
    elif mode == "pairwise":
        for (i, j), s in md.pairwise_shared.items():
            out[f"pairwise_shared_{i}_{j}.safetensors"] = s
    else:
        out["unique_target.safetensors"] = md.unique_target
    for name, tensors in out.items():
        io.save_safetensors(run.path(name), {k: v for k, v in tensors.items()}, metadata=meta)
    return sorted(out)


def _plot(rows: list[dict], mode: str):
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(rows)), 3.5))
    x = range(len(rows))
    ax.bar(x, [r["shared_dim"] for r in rows], color="tab:blue", label="shared dimension")
    ax.plot(x, [max(r["ranks"]) for r in rows], "k_", ms=12, label="largest kept rank")
    ax.set_xticks(list(x), [r["name"] for r in rows], rotation=70, fontsize=7)
    ax.set(ylabel="dimension", title=f"DeVec per layer ({mode})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
