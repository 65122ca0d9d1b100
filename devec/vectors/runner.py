"""``devec experiment=decompose``: shared / unique / merged task vectors of your own checkpoints, as safetensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from devec import io
from devec.runtime import Run
from devec.vectors.demo import demo_checkpoints
from devec.vectors.driver import DecompositionSettings, decompose_model, dense_state, store_for
from devec.vectors.model import TaskVectorPool
from devec.vectors.sharing import sharing_figure, sharing_line, sharing_rows, sharing_summary


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
    with run.stage("load"):
        pool = spec.load(run.cache_dir)
    pretrained, finetuned = spec.pretrained, spec.finetuned
    store = store_for(run.cache_dir / "decompose", pool, settings)
    with run.stage("decomposition", cfg.decomposition.mode):
        md = decompose_model(pool, settings, basis_fn=settings.basis_fn(run.cache_dir), store=store,
                             resume=bool(cfg.get("resume", True)), progress=run.progress)
    with run.stage("save"):
        written = _write_components(run, md, cfg.decomposition.mode, cfg.decomposition.tau,
                                    cfg.decomposition.rank)
    rows = [{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()} for r in md.report]
    sharing = sharing_summary(md.report)
    run.save_table("layers", rows, title="Per-layer report: kept ranks, shared dimension, chance level of sharing "
                   f"({sharing['chance']}), energy", floatfmt=".3f")
    decomposed = [r for r in md.report if r["action"] == "decompose"]
    compared = sharing_rows(md.report)
    if compared:
        run.save_figure("layers", sharing_figure(compared, f"DeVec per layer ({cfg.decomposition.mode})", ranks=True))
    print(sharing_line(sharing))
    return {"pretrained": str(pretrained), "finetuned": [str(f) for f in finetuned], "files": written,
            "decomposed_layers": len(decomposed), "layers": len(md.report),
            "mean_shared_dim": sum(r["shared_dim"] for r in decomposed) / max(1, len(decomposed)),
            "sharing": sharing, "decomposition": OmegaConf.to_container(cfg.decomposition, resolve=True)}


def _write_components(run: Run, md, mode: str, tau: float, rank: str) -> list[str]:
    meta = {"devec_mode": mode, "tau": str(tau), "rank": str(rank)}
    out: dict[str, dict] = {}
    if mode == "joint":
        for i, (s, u) in enumerate(zip(md.shared, md.unique, strict=False)):
            out[f"shared_{i}.safetensors"], out[f"unique_{i}.safetensors"] = s, u
        out["merged_shared.safetensors"] = md.merged_shared
    elif mode == "pairwise":
        for (i, j), s in md.pairwise_shared.items():
            out[f"pairwise_shared_{i}_{j}.safetensors"] = dense_state(s)
    else:
        out["unique_target.safetensors"] = md.unique_target
    for name, tensors in out.items():
        io.save_safetensors(run.path(name), {k: v for k, v in tensors.items()}, metadata=meta)
    return sorted(out)

