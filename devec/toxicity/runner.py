"""Toxicity removal by negating the toxic vector's unique component (Sec. 4.3): Table 4, Fig. 5, Fig. 6.

The method is a :class:`Negation` built from its ``_target_`` config (conf/method/toxicity/negation.yaml). Rows and
curves carry ids (``pretrained``, ``sft``, ``tv_negation``, ``devec_negation``, sub-pool names) beside their labels;
control tasks are picked by id (their lm-eval task ``name``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from devec import paper_numbers
from devec.dtypes import torch_dtype
from devec.report.effects import effect_record, print_effects
from devec.report.regime import above_chance_check, check_record, print_checks
from devec.resume import UnitStore
from devec.runtime import Run, plain, stage
from devec.toxicity import evaluate, world
from devec.toxicity.pool import HubPool, PoolSpec, ToxicityPool, load_pool, pool_spec
from devec.toxicity.streaming import apply_vectors, stream_unique
from devec.vectors import DecompositionSettings, StoredVectors
from devec.vectors.sharing import save_sharing, slug

SELECT = "select"
"""``method.coefficient`` value that picks Table 4's lambda from the Fig. 5 sweep."""


@dataclass
class Negation:
    """W = W_pre - lambda T_unique (DeVec) against W = W_pre - lambda T (TV negation); the sweeps of Figs. 5, 6.

    ``coefficient`` is Table 4's lambda, or ``"select"``: the lambda of ``coefficients`` with the lowest % toxic
    among those whose mean sweep-control score is at most ``max_control_drop`` points below lambda = 0's.
    """

    coefficient: Any = 1.0              # a number, or "select"
    tv_coefficient: float = 1.0
    subpool: str = "All-Models"
    subpools: list[str] = field(default_factory=list)
    coefficients: list[float] = field(default_factory=list)
    taus: list[float] = field(default_factory=list)
    max_control_drop: float = 2.5
    export: bool = False                # Table 4: write each DeVec-edited model as a transformers directory

    def __post_init__(self) -> None:
        if self.coefficient != SELECT:
            try:
                self.coefficient = float(self.coefficient)
            except (TypeError, ValueError):
                raise ValueError(f"coefficient={self.coefficient!r}: give lambda as a number, or {SELECT} to pick it "
                                 "from the Fig. 5 sweep (method.coefficients)") from None
        elif not self.coefficients:
            raise ValueError(f"coefficients=[]: coefficient={SELECT} picks lambda from them; give e.g. [0,1,2]")
        negative = [c for c in self.coefficients if c < 0]
        if negative:
            raise ValueError(f"coefficients={list(self.coefficients)}: lambda is the negation strength (>= 0; the "
                             f"figures plot -lambda), got {negative}")
        if self.max_control_drop < 0:
            raise ValueError(f"max_control_drop={self.max_control_drop}: give the allowed drop in points (>= 0)")

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
    """What every edited model is evaluated with: prompts, classifiers, lm-eval control tasks.

    ``classifiers`` and ``generation`` are the defaults; ``set_classifiers`` / ``set_generation`` those of the
    prompt sets that configure their own (ToxiGen: 128 tokens, newline stop; RTP: 20 tokens, Perspective).
    """

    tokenizer: Any
    prompts: dict[str, list[str]]
    classifiers: list[Any]
    generation: dict[str, Any]
    tasks: list[dict[str, Any]]
    task_dir: Path | None
    lm_eval: dict[str, Any]
    seed: int
    set_classifiers: dict[str, list[Any]] = field(default_factory=dict)
    set_generation: dict[str, dict[str, Any]] = field(default_factory=dict)

    def score(self, model, control: list[str] | None = None, prompt_sets: list[str] | None = None
              ) -> dict[str, float]:
        """% toxic per prompt set (all, or those in ``prompt_sets``) and classifier, then control-task scores
        (all, or the task ids in ``control``)."""
        out: dict[str, float] = {}
        for name, prompts in self.prompts.items():
            if prompt_sets is None or name in prompt_sets:
                out.update(evaluate.toxicity(model, self.tokenizer, {name: prompts},
                                             self.set_classifiers.get(name, self.classifiers),
                                             {**self.generation, **self.set_generation.get(name, {})}, self.seed))
        tasks = [t for t in self.tasks if control is None or t["name"] in control]
        out.update(evaluate.control(model, self.tokenizer, tasks, self.task_dir, device=str(model.device),
                                    **self.lm_eval))
        return out

    def first_classifier(self, prompt_set: str) -> str:
        """The name of the classifier whose % toxic is a prompt set's Table 4 cell."""
        return self.set_classifiers.get(prompt_set, self.classifiers)[0].name


def setup(cfg: DictConfig, run: Run, toxic: str | None = None) -> tuple[ToxicityPool, Bench]:
    """Build or fetch the pool (``toxic``: the toxic member, default pool.toxic) and the bench of ``cfg.data``."""
    from transformers import AutoTokenizer

    _threads(cfg)
    spec = pool_spec(plain(cfg.pool))
    with run.stage("load", "pool"):
        pool = load_pool(spec.with_toxic(toxic) if toxic else spec, run.cache_dir, progress=run.progress)
    with run.stage("load", "bench"):
        tok = AutoTokenizer.from_pretrained(pool.tokenizer)
        data = plain(cfg.data)
        prompts = {name: evaluate.load_prompts(p, seed=int(cfg.seed), cache_dir=run.cache_dir)
                   for name, p in data["prompts"].items()}
        own = {name: p["classifiers"] for name, p in data["prompts"].items() if p.get("classifiers")}
        needs_default = any(name not in own for name in prompts)
        classifiers = [evaluate.make_classifier(c) for c in data["classifiers"]] if needs_default else []
        set_classifiers = {name: [evaluate.make_classifier(c) for c in specs] for name, specs in own.items()}
        set_generation = {name: dict(p["generation"]) for name, p in data["prompts"].items() if p.get("generation")}
        control = data["control"]
        task_dir = None
        if control.get("embedded_tasks"):
            spec_t = control["embedded_tasks"]
            key = f"v{world.WORLD_VERSION}-{spec_t['world_seed']}-{spec_t['n']}-{spec_t['seed']}"
            task_dir = run.cache_dir / "toxicity" / f"tasks-{key}"
            evaluate.write_embedded_tasks(task_dir, int(spec_t["world_seed"]), int(spec_t["n"]), int(spec_t["seed"]))
        bench = Bench(tok, prompts, classifiers, dict(data["generation"]), list(control["tasks"]), task_dir,
                      dict(control.get("lm_eval") or {}), int(cfg.seed), set_classifiers, set_generation)
    return pool, bench


def toxic_vector(cfg: DictConfig, run: Run, pool: ToxicityPool) -> StoredVectors:
    """The plain toxic task vector T, streamed into the cache (the negation baseline and the SFT model)."""
    with run.stage("task_vectors", "toxic"):
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
    with run.stage("decomposition", subpool if tau is None else f"{subpool} tau={tau}"):
        return stream_unique(pool.base, pool.toxic, pool.subpool(subpool), _cache(run), settings=settings,
                             basis_fn=settings.basis_fn(run.cache_dir), resume=bool(cfg.get("resume", True)),
                             store_dtype=cfg.pool.store_dtype, device=settings.device, progress=run.progress)


def edited_model(cfg: DictConfig, pool: ToxicityPool, terms: list[tuple[float, StoredVectors]]):
    """``W = W_pre + sum coef * V`` loaded fresh from the base checkpoint (negation: coef = -lambda)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(pool.base, dtype=torch_dtype(cfg.pool.dtype, "pool.dtype"))
    model.to(cfg.device).eval()
    return apply_vectors(model, terms)


SET_COLUMNS = {"toxigen": "ToxiGen", "rtp": "RealTox"}
"""Table 4's column of each prompt set's % toxic (other sets: their own name)."""


def table4(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Table 4 as the paper lays it out: one toxic vector per benchmark (pool.toxic_vectors), each scored on its own
    prompt set; control tasks per vector ("ToxiGen vector / RTP vector"), their Avg.; the paper's rows beside ours.

    Rows per vector: SFT (+T), task-vector negation (-lambda_TV T), DeVec (-lambda T_unique); the pre-trained row
    once. ``method.coefficient=select`` picks lambda per vector from the Fig. 5 sweep (recorded in results.json).
    """
    m = method(cfg)
    spec = pool_spec(plain(cfg.pool))
    _, bench = setup(cfg, run)
    evaluations = UnitStore.for_config(run.cache_dir, cfg)
    sets = list(bench.prompts)
    base_scores = scored(cfg, evaluations, "table4 | Pre-trained", bench, _pool(spec, run, spec.toxic), [])
    long_rows = [{"id": "pretrained", "vector": "none", "model": "Pre-trained", **base_scores}]
    per_vector: dict[str, dict[str, dict[str, float]]] = {}
    chosen, energy, sharing = {}, {}, {}
    for s in sets:
        member = spec.vector_for(s)
        pool = _pool(spec, run, member)
        t, u = toxic_vector(cfg, run, pool), unique_vector(cfg, run, pool, m.subpool)
        chosen[s] = select_coefficient(cfg, m, evaluations, bench, pool, u, s)
        lam = chosen[s]["lambda"]
        energy[s] = _unique_energy(u)
        run.save_json(f"unique_report_{s}.json", u.report())
        sharing[s] = save_sharing(run, u.report(), f"{s} toxic vector against the {m.subpool} sub-pool: dimensions "
                                  "removed per layer", name=f"sharing_{slug(s)}", label=f"{s} toxic vector")
        per_vector[s] = {"pretrained": base_scores}
        for rid, name, terms in [("sft", "SFT (toxic)", [(1.0, t)]),
                                 (TV_NEGATION, f"Negation (TV, lambda={m.tv_coefficient})",
                                  [(-float(m.tv_coefficient), t)]),
                                 ("devec_negation", f"DeVec unique negation (lambda={lam}, {m.subpool})",
                                  [(-float(lam), u)])]:
            scores = scored(cfg, evaluations, f"table4 | {s} vector | {name}", bench, pool, terms, prompt_sets=[s])
            per_vector[s][rid] = scores
            long_rows.append({"id": rid, "vector": f"{s} ({member})", "model": name, **scores})
            run.log({f"table4/{s}/{rid}/{k}": v for k, v in scores.items()})
        if m.export:
            chosen[s]["exported"] = str(export_edited(pool, [(-float(lam), u)], run.path(f"edited/{s}")))
    rows = paper_layout(per_vector, bench, sets)
    paper = paper_numbers.table4_rows()
    if not isinstance(spec, HubPool):  # the embedded pool: the paper's rows orient, they are not comparable
        paper = [{**r, "source": f"{r['source']}; LLaMA-2-7B, not this scale"} for r in paper]
    columns = list(dict.fromkeys([k for r in rows for k in r if k != "id"] + paper_numbers.TABLE4_COLUMNS))
    run.save_table("table4_toxicity", rows + paper, columns,
                   title="Table 4: % toxic (lower is better; each benchmark with its own toxic vector) and control "
                         f"tasks ({' / '.join(f'{s} vector' for s in sets)}); rows marked (paper) are the paper's")
    run.save_table("table4_toxicity_per_vector", long_rows, [k for k in long_rows[0] if k != "id"]
                   + [k for r in long_rows for k in r if k not in long_rows[0]],
                   title="Table 4 per toxic vector: every prompt set and classifier scored")
    effects = [e for s in sets for e in negation_effects(
        per_vector[s]["devec_negation"], per_vector[s][TV_NEGATION], base_scores, f"{s}/{bench.first_classifier(s)}",
        control_labels(bench), s, f"DeVec unique negation vs TV negation ({s} vector)")]
    print_effects(effects)
    result = {"rows": rows, "paper_rows": paper, "per_vector": long_rows, "vectors": {s: spec.vector_for(s)
              for s in sets}, "lambda": chosen, "unique_energy": energy, "subpool": m.subpool, "effects": effects,
              "sharing": sharing,
              "removal_ratio": {s: removal_ratio(per_vector[s]["devec_negation"], per_vector[s][TV_NEGATION],
                                                 base_scores, f"{s}/{bench.first_classifier(s)}") for s in sets}}
    result["regime"] = table4_regime(result)
    print_checks(result["regime"])
    return result


def table4_regime(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table 4's regime checks (:mod:`devec.report.regime`) per toxic vector: unique negation removes at least 80 %
    of the toxicity TV negation removes (the paper: ToxiGen 47.0 points against 6.0, RealTox 45.5 against 34.1),
    and most of the toxic vector's decomposed layers share more with the sub-pool than random subspaces would."""
    paper = {r["model"]: r for r in paper_numbers.table4_rows()}
    base, tv, ours = (paper.get(f"{m} (paper)", {}) for m in ("LLaMA2-7B", "Task Vector [18]", "DeVec (Ours)"))
    out = []
    for s, ratio in (results.get("removal_ratio") or {}).items():
        col = SET_COLUMNS.get(s, s)
        try:
            ref = 100 * (float(base[col]) - float(ours[col])) / (float(base[col]) - float(tv[col]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            ref = None
        if ratio is not None:
            out.append(check_record(f"removal_{s}", f"toxicity removed by unique negation, % of TV negation's ({s} "
                                    "vector)", 100 * float(ratio), low=80.0, paper=ref))
        sharing = above_chance_check(f"sharing_{s}", f"decomposed layers sharing above chance, % ({s} vector)",
                                     (results.get("sharing") or {}).get(s))
        out += [sharing] if sharing else []
    return out


CONTROL_DISTANCE = "control tasks: mean |change| from pre-trained (points)"
"""The effect metric of how far an edit moves the control-task scores from the pre-trained model's."""


def negation_effects(devec: dict[str, float], tv: dict[str, float], pretrained: dict[str, float], toxic_key: str,
                     control: list[str], id: str, comparison: str) -> list[dict[str, Any]]:
    """DeVec's unique negation against TV negation (scores of the same seed): % toxic (lower is better), toxicity
    removed as % of the pre-trained model's (higher), and the control tasks' mean distance to the pre-trained
    model's scores (lower); records of devec.report.effects."""
    records = [effect_record(id, comparison, f"% toxic ({toxic_key})", devec[toxic_key], tv[toxic_key], False)]
    before = pretrained.get(toxic_key)
    if before:  # nothing to remove when the pre-trained model is never toxic
        removed = [100 * (before - scores[toxic_key]) / before for scores in (devec, tv)]
        records.append(effect_record(id, comparison, f"toxicity removed (% of pre-trained, {toxic_key})", *removed,
                                     True))
    shared = [k for k in control if k in devec and k in tv and k in pretrained]
    if shared:
        records.append(effect_record(id, comparison, CONTROL_DISTANCE,
                                     sum(abs(devec[k] - pretrained[k]) for k in shared) / len(shared),
                                     sum(abs(tv[k] - pretrained[k]) for k in shared) / len(shared), False))
    return records


def removal_ratio(devec: dict[str, float], tv: dict[str, float], pretrained: dict[str, float], toxic_key: str
                  ) -> float | None:
    """The toxicity DeVec's negation removes as a fraction of what TV negation removes (None if TV removes none)."""
    removed_tv = pretrained[toxic_key] - tv[toxic_key]
    return (pretrained[toxic_key] - devec[toxic_key]) / removed_tv if removed_tv else None


def control_labels(bench: Bench, names: list[str] | None = None) -> list[str]:
    """The score keys of the control tasks (all, or those whose lm-eval name is in ``names``)."""
    return [str(t.get("label", t["name"])) for t in bench.tasks if names is None or t["name"] in names]


def export_edited(pool: ToxicityPool, terms: list[tuple[float, StoredVectors]], out_dir: Path) -> Path:
    """Write ``W_pre + sum coef * V`` as a transformers model directory in the base checkpoint's dtype and shard
    size (safetensors), with its tokenizer: usable outside devec (``AutoModelForCausalLM.from_pretrained``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from devec.io import atomic_dir

    model = apply_vectors(AutoModelForCausalLM.from_pretrained(pool.base, dtype="auto"), terms)
    shards = [f.stat().st_size for f in Path(pool.base).glob("*.safetensors")]
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp, max_shard_size=max(shards) if shards else "5GB", safe_serialization=True)
        AutoTokenizer.from_pretrained(pool.tokenizer).save_pretrained(tmp)
    return Path(out_dir)


def paper_layout(per_vector: dict[str, dict[str, dict[str, float]]], bench: Bench, sets: list[str]
                 ) -> list[dict[str, Any]]:
    """Table 4's rows: each prompt set's % toxic from its own vector; control tasks and Avg. "a / b" over vectors."""
    labels = [str(t.get("label", t["name"])) for t in bench.tasks]
    names = {"pretrained": "Pre-trained", "sft": "SFT (toxic)", TV_NEGATION: "Negation (TV)",
             "devec_negation": "DeVec unique negation"}
    rows = []
    for rid, name in names.items():
        row: dict[str, Any] = {"id": rid, "model": f"{name} (ours)", "source": "ours"}
        for s in sets:
            row[SET_COLUMNS.get(s, s)] = per_vector[s][rid][f"{s}/{bench.first_classifier(s)}"]
        per = [[per_vector[s][rid][lab] for lab in labels] for s in sets]
        for i, lab in enumerate(labels):
            row[lab] = _joined([p[i] for p in per])
        row["Avg."] = _joined([sum(p) / len(p) for p in per]) if labels else None
        rows.append(row)
    return rows


def _joined(values: list[float]) -> float | str:
    """One value, or several as the paper prints them ("14.9/14.5"), equal ones once."""
    if len(set(values)) == 1:
        return values[0]
    return "/".join(f"{v:.2f}" for v in values)


def select_coefficient(cfg: DictConfig, m: Negation, evaluations: UnitStore, bench: Bench, pool: ToxicityPool,
                       u: StoredVectors, prompt_set: str) -> dict[str, Any]:
    """Table 4's lambda: ``method.coefficient``, or with ``select`` the rule of :class:`Negation` on the Fig. 5
    sweep of ``method.subpool`` (resumable units, as Fig. 5's), with the sweep recorded."""
    if m.coefficient != SELECT:
        return {"lambda": float(m.coefficient), "rule": "method.coefficient"}
    control = list(cfg.data.sweep_control)
    labels = [str(t.get("label", t["name"])) for t in bench.tasks if t["name"] in control]
    sweep = []
    for lam in m.coefficients:
        sc = scored(cfg, evaluations, f"fig5 | {m.subpool}", bench, pool, [(-float(lam), u)], control,
                    prompt_sets=[prompt_set])
        tox = sc[f"{prompt_set}/{bench.first_classifier(prompt_set)}"]
        sweep.append({"lambda": float(lam), "toxic": tox, "control": sum(sc[lab] for lab in labels) / len(labels)})
    reference = next((r["control"] for r in sweep if r["lambda"] == 0.0), sweep[0]["control"])
    allowed = [r for r in sweep if r["control"] >= reference - m.max_control_drop] or sweep[:1]
    best = min(allowed, key=lambda r: (r["toxic"], r["lambda"]))
    rule = (f"lowest % toxic on {prompt_set} among the lambdas of method.coefficients whose mean {labels} is at most "
            f"{m.max_control_drop} points below lambda=0 (sub-pool {m.subpool})")
    return {"lambda": best["lambda"], "rule": rule, "sweep": sweep}


def fig5_negation_coefficient(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Fig. 5: sweep lambda per sub-pool; % toxic (the toxic vector's own prompt set) and the MMLU-style control
    (data.sweep_control) against the signed coefficient -lambda, as the paper plots it (TV negation too)."""
    m = method(cfg)
    pool, bench = setup(cfg, run)
    control = list(cfg.data.sweep_control)
    sets = _own_sets(cfg, bench)
    t = toxic_vector(cfg, run, pool)
    curves: dict[str, list[dict[str, Any]]] = {}
    labels = {TV_NEGATION: "TV negation", **{s: s for s in m.subpools}}  # curve id (a sub-pool's name) -> legend
    vectors = {TV_NEGATION: t, **{s: unique_vector(cfg, run, pool, s) for s in m.subpools}}
    evaluations = UnitStore.for_config(run.cache_dir, cfg)
    for cid, vec in vectors.items():
        curves[cid] = []
        for lam in run.progress(list(m.coefficients), f"lambda sweep: {labels[cid]}"):
            scores = scored(cfg, evaluations, f"fig5 | {labels[cid]}", bench, pool, [(-float(lam), vec)], control,
                            prompt_sets=sets)
            curves[cid].append({"id": cid, "pool": labels[cid], "lambda": float(lam),
                                "negation coefficient": -float(lam), **scores})
            run.log({f"fig5/{cid}/{k}": v for k, v in scores.items()} | {"fig5/lambda": float(lam)})
    rows = [r for c in curves.values() for r in c]
    run.save_table("fig5_negation_coefficient", rows, [k for k in rows[0] if k != "id"],
                   title="Fig. 5: negation coefficient sweep per sub-pool")
    run.save_figure("fig5_negation_coefficient",
                    _plot(curves, "negation coefficient", _metric_keys(rows), "negation coefficient", labels))
    return {"curves": curves, "prompt_sets": sets, "control": control,
            "effects": fig5_effects(curves, [f"{s}/{bench.first_classifier(s)}" for s in sets],
                                    control_labels(bench, control), labels)}


def fig5_effects(curves: dict[str, list[dict[str, Any]]], toxic_keys: list[str], control: list[str],
                 labels: dict[str, str]) -> list[dict[str, Any]]:
    """Each sub-pool's unique negation against TV negation at the same lambda > 0 (:func:`negation_effects`; the
    pre-trained model is the sweep's lambda = 0)."""
    tv = {r["lambda"]: r for r in curves.get(TV_NEGATION, [])}
    pretrained = tv.get(0.0, {})
    out = []
    for cid, rows in curves.items():
        for row in rows:
            if cid == TV_NEGATION or row["lambda"] == 0 or row["lambda"] not in tv:
                continue
            lam = f"lambda={row['lambda']:g}"
            for i, key in enumerate(toxic_keys):  # the control tasks are the same for every prompt set: once
                out += negation_effects(row, tv[row["lambda"]], pretrained, key, control if i == 0 else [],
                                        f"{cid}@{lam}", f"unique negation ({labels[cid]}) vs TV negation, {lam}")
    return out


def fig6_tau(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Fig. 6: one curve per tau of the iterative extraction over the signed negation coefficient; panels % toxic
    and the GSM8K-style control (data.tau_sweep_control).

    The taus are ``method.taus``; ``decomposition.tau`` stays unset (devec.settings refuses it with that hint), and
    each extraction sees a config whose ``decomposition.tau`` is the swept value.
    """
    import copy

    from omegaconf import open_dict

    m = method(cfg)
    pool, bench = setup(cfg, run)
    control = list(cfg.data.get("tau_sweep_control") or [])
    sets = _own_sets(cfg, bench)
    evaluations = UnitStore.for_config(run.cache_dir, cfg)
    rows, curves, labels = [], {}, {}
    for tau in run.progress(list(m.taus), "tau sweep"):
        at_tau = copy.deepcopy(cfg)
        with open_dict(at_tau):
            at_tau.decomposition = {**plain(cfg.decomposition), "tau": float(tau)}
        u = unique_vector(at_tau, run, pool, m.subpool, tau=float(tau))
        cid = f"tau={float(tau)!r}"
        labels[cid], curves[cid] = f"tau = {float(tau)}", []
        energy = _unique_energy(u)
        for lam in m.coefficients:
            scores = scored(cfg, evaluations, f"fig6 | {cid}", bench, pool, [(-float(lam), u)], control=control,
                            prompt_sets=sets)
            row = {"id": cid, "tau": float(tau), "lambda": float(lam), "negation coefficient": -float(lam),
                   "unique_energy": energy, **scores}
            curves[cid].append(row)
            rows.append(row)
            run.log({f"fig6/{k}": v for k, v in row.items() if k != "id"})
    run.save_table("fig6_tau", rows, [k for k in rows[0] if k != "id"],
                   title=f"Fig. 6: negation coefficient sweep per tau (sub-pool {m.subpool})")
    run.save_figure("fig6_tau", _plot(curves, "negation coefficient", _metric_keys(rows), "negation coefficient",
                                      labels))
    return {"rows": rows, "prompt_sets": sets, "control": control}


def _own_sets(cfg: DictConfig, bench: Bench) -> list[str]:
    """The prompt sets pool.toxic is scored on in the sweeps: those it is Table 4's vector for (else all)."""
    spec = pool_spec(plain(cfg.pool))
    own = [s for s in bench.prompts if spec.vector_for(s) == spec.toxic]
    return own or list(bench.prompts)


def _pool(spec: PoolSpec, run: Run, toxic: str) -> ToxicityPool:
    with run.stage("load", f"pool ({toxic})"):
        return load_pool(spec.with_toxic(toxic), run.cache_dir, progress=run.progress)


def scored(cfg: DictConfig, evaluations: UnitStore, unit: str, bench: Bench, pool: ToxicityPool,
           terms: list[tuple[float, StoredVectors]], control: list[str] | None = None,
           prompt_sets: list[str] | None = None) -> dict[str, float]:
    """``bench.score`` of ``W_pre + sum coef * V``, a resumable unit named by the vectors' content keys, the
    coefficients and what is scored (``resume=false`` scores it again)."""
    edit = ", ".join(f"{coef!r} x {vec.root.name}" for coef, vec in terms if coef != 0) or "none"
    name = f"{unit} | {edit} | control {control if control is not None else 'all'}"
    if prompt_sets is not None:
        name += f" | prompts {prompt_sets}"
    if cfg.get("resume", True) and evaluations.done(name):
        return evaluations.load(name)
    only = {} if prompt_sets is None else {"prompt_sets": prompt_sets}
    with stage("evaluation", unit):
        return evaluations.save(name, bench.score(edited_model(cfg, pool, terms), control=control, **only))


def train_toxic_dora(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """The toxic task vectors of Sec. 4.3: one DoRA fine-tune of the base per toxic dataset (pool.recipe, App. 12).

    Each adapter is a result (hours of GPU at paper scale), not a cache entry: transformers' Trainer writes its
    checkpoints to ``<run folder>/adapters/<dataset>/checkpoints`` and the final peft adapter directory replaces
    them at ``<run folder>/adapters/<dataset>``, which the paper pool's ``members.toxic_*.repo`` point at. With
    ``resume=true`` (the default) a rerun in the same run folder (``hydra.run.dir=<that folder>``) keeps the adapters
    it finished and resumes the others from their last checkpoint; ``resume=false`` trains every one afresh.
    """
    import json
    import logging

    from transformers import AutoTokenizer

    from devec.toxicity.recipe import toxic_pairs, train_dora

    _threads(cfg)
    pool = plain(cfg.pool)
    recipe = pool["recipe"]
    resume = bool(cfg.get("resume", True))
    with run.stage("load", "base"):
        base = pool_spec(pool).base_checkpoint(run.cache_dir, progress=run.progress)
    tok = AutoTokenizer.from_pretrained(base)
    dtype = torch_dtype(pool["dtype"], "pool.dtype")
    out = {}
    for name in method(cfg).datasets or list(recipe["datasets"]):
        spec = recipe["datasets"][name]
        target = run.path(f"adapters/{name}")  # a result, kept with the run; clearing the cache keeps it
        done = json.loads((target / "training.json").read_text()) if (target / "training.json").exists() else {}
        same = {k: v for k, v in done.get("recipe", {}).items() if k != "datasets"} == {
            k: v for k, v in recipe.items() if k != "datasets"} and done.get("epochs") == int(spec["epochs"])
        if resume and same:
            logging.getLogger(__name__).info("adapter %s is finished (%s); resume=false retrains it", name, target)
            out[name] = {"adapter": str(target), **{k: v for k, v in done.items() if k != "recipe"}}
            continue
        with run.stage("load", f"data ({name})"):
            pairs = toxic_pairs(spec, limit=spec.get("limit"))
        with run.stage("training", name):
            out[name] = {"adapter": str(target), **train_dora(base, tok, pairs, recipe, int(spec["epochs"]), target,
                                                                device=cfg.device, dtype=dtype, seed=int(cfg.seed),
                                                                resume=resume)}
        run.log({f"dora/{name}/last_loss": out[name]["last_loss"]})
    return {"adapters": out}


def _metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    skip = {"id", "pool", "lambda", "negation coefficient", "tau", "unique_energy", "model"}
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


