"""Toxicity removal by negating the toxic vector's unique component (Sec. 4.3): Table 4, Fig. 5, Fig. 6.

The method is a :class:`Negation` built from its ``_target_`` config (conf/method/toxicity/negation.yaml). Rows and
curves carry ids (``pretrained``, ``sft``, ``tv_negation``, ``devec_negation``, sub-pool names) beside their labels;
control tasks are picked by id (their lm-eval task ``name``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from devec.dtypes import torch_dtype
from devec.resume import UnitStore
from devec.runtime import Run, plain
from devec.toxicity import evaluate, world
from devec.toxicity.pool import ToxicityPool, load_pool
from devec.toxicity.streaming import apply_vectors, stream_unique
from devec.vectors import DecompositionSettings, StoredVectors


@dataclass
class Negation:
    """W = W_pre - lambda T_unique (DeVec) against W = W_pre - lambda T (TV negation); the sweeps of Figs. 5, 6."""

    coefficient: float = 1.0
    tv_coefficient: float = 1.0
    subpool: str = "All-Models"
    subpools: list[str] = field(default_factory=list)
    coefficients: list[float] = field(default_factory=list)
    taus: list[float] = field(default_factory=list)


@dataclass
class DoraTraining:
    """The toxic DoRA fine-tunes: the datasets of ``pool.recipe.datasets`` to train on (None: all)."""

    datasets: list[str] | None = None


TV_NEGATION = "tv_negation"
"""The id of plain task-vector negation, the reference curve of Fig. 5."""


def method(cfg: DictConfig) -> Any:
    """The experiment's method, built from its ``_target_`` config."""
    return instantiate(cfg.method, _convert_="all")


@dataclass
class Bench:
    """What every edited model is evaluated with: prompts, classifiers, lm-eval control tasks."""

    tokenizer: Any
    prompts: dict[str, list[str]]
    classifiers: list[Any]
    generation: dict[str, Any]
    tasks: list[dict[str, Any]]
    task_dir: Path | None
    lm_eval: dict[str, Any]
    seed: int

    def score(self, model, control: list[str] | None = None) -> dict[str, float]:
        """% toxic per prompt set and classifier, then control-task scores (all, or the task ids in ``control``)."""
        out = evaluate.toxicity(model, self.tokenizer, self.prompts, self.classifiers, self.generation, self.seed)
        tasks = [t for t in self.tasks if control is None or t["name"] in control]
        out.update(evaluate.control(model, self.tokenizer, tasks, self.task_dir, device=str(model.device),
                                    **self.lm_eval))
        return out


def setup(cfg: DictConfig, run: Run) -> tuple[ToxicityPool, Bench]:
    """Build or fetch the pool (embedded: the tiny LLaMA pool) and the evaluation bench of ``cfg.data``."""
    from transformers import AutoTokenizer

    _threads(cfg)
    pool = load_pool(plain(cfg.pool), run.cache_dir, progress=run.progress)
    tok = AutoTokenizer.from_pretrained(pool.tokenizer)
    data = plain(cfg.data)
    prompts = {name: evaluate.load_prompts(spec, seed=int(cfg.seed)) for name, spec in data["prompts"].items()}
    classifiers = [evaluate.make_classifier(c) for c in data["classifiers"]]
    control = data["control"]
    task_dir = None
    if control.get("embedded_tasks"):
        spec = control["embedded_tasks"]
        key = f"v{world.WORLD_VERSION}-{spec['world_seed']}-{spec['n']}-{spec['seed']}"
        task_dir = run.cache_dir / "toxicity" / f"tasks-{key}"
        evaluate.write_embedded_tasks(task_dir, int(spec["world_seed"]), int(spec["n"]), int(spec["seed"]))
    bench = Bench(tok, prompts, classifiers, dict(data["generation"]), list(control["tasks"]), task_dir,
                  dict(control.get("lm_eval") or {}), int(cfg.seed))
    return pool, bench


def toxic_vector(cfg: DictConfig, run: Run, pool: ToxicityPool) -> StoredVectors:
    """The plain toxic task vector T, streamed into the cache (the negation baseline and the SFT model)."""
    return stream_unique(pool.base, pool.toxic, [], _cache(run), store_dtype=cfg.pool.store_dtype,
                         resume=bool(cfg.get("resume", True)), progress=run.progress)


def unique_vector(cfg: DictConfig, run: Run, pool: ToxicityPool, subpool: str, tau: float | None = None
                  ) -> StoredVectors:
    """T_unique: the toxic vector minus what it shares with each vector of ``subpool`` in turn (Sec. 4.3).

    Layers are stored as they finish (resume; ``resume=false`` recomputes them); SVDs come from the basis cache
    when ``decomposition.cache`` is on, so a tau sweep computes each once.
    """
    d = cfg.decomposition
    if d.mode != "iterative":
        raise ValueError(f"toxicity removal uses decomposition=iterative, got decomposition.mode={d.mode!r}")
    changes = {} if tau is None else {"tau": float(tau)}
    settings = DecompositionSettings.from_config(plain(d), **changes)
    return stream_unique(pool.base, pool.toxic, pool.subpool(subpool), _cache(run), settings=settings,
                         basis_fn=settings.basis_fn(run.cache_dir), resume=bool(cfg.get("resume", True)),
                         store_dtype=cfg.pool.store_dtype, device=cfg.pool.decompose_device, progress=run.progress)


def edited_model(cfg: DictConfig, pool: ToxicityPool, terms: list[tuple[float, StoredVectors]]):
    """``W = W_pre + sum coef * V`` loaded fresh from the base checkpoint (negation: coef = -lambda)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(pool.base, dtype=torch_dtype(cfg.pool.dtype, "pool.dtype"))
    model.to(cfg.device).eval()
    return apply_vectors(model, terms)


def table4(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Table 4: pre-trained, SFT (toxic), task-vector negation and DeVec unique negation: % toxic and control."""
    m = method(cfg)
    pool, bench = setup(cfg, run)
    t = toxic_vector(cfg, run, pool)
    u = unique_vector(cfg, run, pool, m.subpool)
    rows_spec = [("pretrained", "Pre-trained", []), ("sft", "SFT (toxic)", [(1.0, t)]),
                 (TV_NEGATION, f"Negation (TV, lambda={m.tv_coefficient})", [(-float(m.tv_coefficient), t)]),
                 ("devec_negation", f"DeVec unique negation (lambda={m.coefficient}, {m.subpool})",
                  [(-float(m.coefficient), u)])]
    rows = []
    evaluations = UnitStore.for_config(run.cache_dir, cfg)
    for rid, name, terms in run.progress(rows_spec, "Table 4 models"):
        scores = scored(cfg, evaluations, f"table4 | {name}", bench, pool, terms)
        rows.append({"id": rid, "model": name, **scores})
        run.log({f"table4/{rid}/{k}": v for k, v in scores.items()})
    energy = _unique_energy(u)
    run.save_table("table4_toxicity", rows, [k for k in rows[0] if k != "id"],
                   title="Table 4: toxicity (% toxic, lower is better) and control tasks")
    run.save_json("unique_report.json", u.report())
    return {"rows": rows, "unique_energy": energy, "subpool": m.subpool}


def fig5_negation_coefficient(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Fig. 5: sweep lambda per sub-pool; % toxic and the MMLU-style control against lambda (TV negation too)."""
    m = method(cfg)
    pool, bench = setup(cfg, run)
    control = list(cfg.data.sweep_control)
    t = toxic_vector(cfg, run, pool)
    curves: dict[str, list[dict[str, Any]]] = {}
    labels = {TV_NEGATION: "TV negation", **{s: s for s in m.subpools}}  # curve id (a sub-pool's name) -> legend
    vectors = {TV_NEGATION: t, **{s: unique_vector(cfg, run, pool, s) for s in m.subpools}}
    evaluations = UnitStore.for_config(run.cache_dir, cfg)
    for cid, vec in vectors.items():
        curves[cid] = []
        for lam in run.progress(list(m.coefficients), f"lambda sweep: {labels[cid]}"):
            scores = scored(cfg, evaluations, f"fig5 | {labels[cid]}", bench, pool, [(-float(lam), vec)], control)
            curves[cid].append({"id": cid, "pool": labels[cid], "lambda": float(lam), **scores})
            run.log({f"fig5/{cid}/{k}": v for k, v in scores.items()} | {"fig5/lambda": float(lam)})
    rows = [r for c in curves.values() for r in c]
    run.save_table("fig5_negation_coefficient", rows, [k for k in rows[0] if k != "id"],
                   title="Fig. 5: negation coefficient sweep per sub-pool")
    run.save_figure("fig5_negation_coefficient",
                    _plot(curves, "lambda", _metric_keys(rows), "negation coefficient", labels))
    return {"curves": curves}


def fig6_tau(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Fig. 6: sweep tau of the iterative extraction at a fixed lambda; % toxic and control against tau.

    The taus are ``method.taus``; ``decomposition.tau`` stays unset (devec.settings refuses it with that hint), and
    each extraction sees a config whose ``decomposition.tau`` is the swept value.
    """
    import copy

    from omegaconf import open_dict

    m = method(cfg)
    pool, bench = setup(cfg, run)
    evaluations = UnitStore.for_config(run.cache_dir, cfg)
    rows = []
    for tau in run.progress(list(m.taus), "tau sweep"):
        at_tau = copy.deepcopy(cfg)
        with open_dict(at_tau):
            at_tau.decomposition = {**plain(cfg.decomposition), "tau": float(tau)}
        u = unique_vector(at_tau, run, pool, m.subpool, tau=float(tau))
        scores = scored(cfg, evaluations, f"fig6 | tau={float(tau)!r}", bench, pool, [(-float(m.coefficient), u)],
                        control=list(cfg.data.sweep_control))
        rows.append({"tau": float(tau), "unique_energy": _unique_energy(u), **scores})
        run.log({f"fig6/{k}": v for k, v in rows[-1].items()})
    run.save_table("fig6_tau", rows, title=f"Fig. 6: tau sweep (lambda={m.coefficient}, sub-pool {m.subpool})")
    curve = {"devec_negation": rows}
    run.save_figure("fig6_tau", _plot(curve, "tau", _metric_keys(rows), "tau", {"devec_negation": "DeVec"}))
    return {"rows": rows}


def scored(cfg: DictConfig, evaluations: UnitStore, unit: str, bench: Bench, pool: ToxicityPool,
           terms: list[tuple[float, StoredVectors]], control: list[str] | None = None) -> dict[str, float]:
    """``bench.score`` of ``W_pre + sum coef * V``, a resumable unit named by the vectors' content keys and the
    coefficients (``resume=false`` scores it again)."""
    edit = ", ".join(f"{coef!r} x {vec.root.name}" for coef, vec in terms) or "none"
    name = f"{unit} | {edit} | control {control if control is not None else 'all'}"
    if cfg.get("resume", True) and evaluations.done(name):
        return evaluations.load(name)
    return evaluations.save(name, bench.score(edited_model(cfg, pool, terms), control=control))


def train_toxic_dora(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """The toxic task vectors of Sec. 4.3: one DoRA fine-tune of the base per toxic dataset (pool.recipe).

    Each adapter is a result (hours of GPU at paper scale), not a cache entry: it is written as a peft adapter
    directory ``<run folder>/adapters/<dataset>``, which the paper pool's ``members.toxic_*.repo`` point at.
    """
    from transformers import AutoTokenizer

    from devec.toxicity.pool import pool_spec
    from devec.toxicity.recipe import toxic_pairs, train_dora

    _threads(cfg)
    pool = plain(cfg.pool)
    recipe = pool["recipe"]
    base = pool_spec(pool).base_checkpoint(run.cache_dir, progress=run.progress)
    tok = AutoTokenizer.from_pretrained(base)
    dtype = torch_dtype(pool["dtype"], "pool.dtype")
    out = {}
    for name in method(cfg).datasets or list(recipe["datasets"]):
        spec = recipe["datasets"][name]
        pairs = toxic_pairs(spec, limit=spec.get("limit"))
        target = run.path(f"adapters/{name}")  # a result, kept with the run; clearing the cache keeps it
        out[name] = {"adapter": str(target), **train_dora(base, tok, pairs, recipe, int(spec["epochs"]), target,
                                                            device=cfg.device, dtype=dtype,
                                                            seed=int(cfg.seed), progress=run.progress)}
        run.log({f"dora/{name}/last_loss": out[name]["last_loss"]})
    return {"adapters": out}


def _metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    skip = {"id", "pool", "lambda", "tau", "unique_energy", "model"}
    return [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip]


def _plot(curves: dict[str, list[dict[str, Any]]], x: str, metrics: list[str], xlabel: str, labels: dict[str, str]):
    """One panel per metric, a line per curve id (dashed: TV negation), legends from ``labels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for cid, rows in curves.items():
            style = "--" if cid == TV_NEGATION else "-"
            ax.plot([r[x] for r in rows], [r[metric] for r in rows], style, marker="o", label=labels[cid])
        ax.set_xlabel(xlabel)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _unique_energy(store: StoredVectors) -> float:
    """Share of the toxic vector's squared norm kept in T_unique, averaged over decomposed parameters."""
    rows = [r for r in store.report() if r.get("action") == "decompose"]
    return sum(r["unique_energy"] for r in rows) / max(1, len(rows))


def _threads(cfg: DictConfig) -> None:
    if cfg.pool.get("threads"):
        torch.set_num_threads(int(cfg.pool.threads))


def _cache(run: Run) -> Path:
    return run.cache_dir / "toxicity" / "vectors"


