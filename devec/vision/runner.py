"""Vision runner (Sec. 4.1): CLIP ViT multi-task merging with and without DeVec's pairwise shared components.

One function per table or figure, each named by its experiment's ``runner: {_target_: ...}``: :func:`table1`
(multi-task merging), :func:`table2` (held-out tasks), :func:`table3` (leave-one-out ablation of shared/unique
parts), :func:`fig2_fig3` (joint shared vs unique on an unseen target). Rows carry the method's id (its key under
``methods``) beside its display label; effects and normalization key on ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from devec.resume import UnitStore
from devec.runtime import Run
from devec.vectors import DecompositionSettings, decompose_model
from devec.vectors.sharing import save_sharing, slug
from devec.vision.data import Task, load_tasks
from devec.vision.methods import MergeContext, Method, combine
from devec.vision.paper_table import save_beside_paper
from devec.vision.pool import VisionPool, load_pool
from devec.vision.taskpool import evaluate, normalized

log = logging.getLogger(__name__)

INDIVIDUAL = "individual"
"""The id of the row (each task with its own fine-tuned model) a table's accuracies are normalized by."""


def _setup(cfg: DictConfig, run: Run, evaluated: Sequence[str], finetuned: Sequence[str]
           ) -> tuple[dict[str, Task], VisionPool]:
    threads = cfg.vision.get("threads") or cfg.pool.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    with run.stage("load"):
        tasks = load_tasks(cfg.data, list(dict.fromkeys(evaluated)), run.cache_dir, run.progress)
        pool = load_pool(cfg.pool, cfg.data, tasks, finetuned, run.cache_dir, run.progress)
        return tasks, pool.to(cfg.get("device", "cpu"))


def pairwise_shared(vectors: list[dict[str, torch.Tensor]], decomposition: Mapping[str, Any],
                    cache_dir: Path | None = None, on_report: Callable[[list], Any] | None = None
                    ) -> list[dict[str, torch.Tensor]]:
    """DeVec's pairwise merged shared components (eq. 14 for each pair i < j): k(k-1)/2 extra task vectors
    (``on_report``: called with the per-layer report)."""
    settings = DecompositionSettings.from_config(decomposition, mode="pairwise")
    md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(cache_dir), progress=False)
    if on_report is not None:
        on_report(md.report)
    return md.pairwise_dense()


def method_configs(cfg: DictConfig) -> dict[str, tuple[str, DictConfig]]:
    """``{method id: (config key, node)}``: a table's rows ``methods.<id>``, or the single ``method`` (id method)."""
    methods = cfg.get("methods")
    if methods:
        return {str(k): (f"methods.{k}", v) for k, v in methods.items()}
    return {"method": ("method", cfg.method)} if cfg.get("method") is not None else {}


def _methods(cfg: DictConfig) -> list[tuple[str, Method, dict[str, Any]]]:
    """``(id, method, config)`` of each row, built from its ``_target_`` config exactly as composed (a pool's
    budgets are resolved by Hydra, in config.yaml)."""
    rows = [(mid, instantiate(node, _convert_="all"), OmegaConf.to_container(node, resolve=True))
            for mid, (_, node) in method_configs(cfg).items()]
    if not rows:
        raise ValueError("the experiment lists no methods (methods: {...} in conf/experiment/)")
    return rows


def _label(mid: str, method: Method) -> str:
    return str(method.label or mid)


def merge_and_evaluate(cfg: DictConfig, run: Run, pool: VisionPool, merged: dict[str, Task],
                       evaluated: dict[str, Task], shared: list[dict[str, torch.Tensor]] | None
                       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every configured method on the ``merged`` tasks, each evaluated on ``evaluated``; rows and details (by id).

    Each method is a unit of :class:`devec.resume.UnitStore`: an interrupted run, started again with the same
    config, skips the methods it had finished.
    """
    with run.stage("task_vectors"):
        vectors = pool.task_vectors(list(merged))
    store = UnitStore.for_config(run.cache_dir, cfg)
    rows, details = [], {}
    for mid, method, mcfg in run.progress(_methods(cfg), desc="methods"):
        label = _label(mid, method)
        unit = f"{mid} | merged {','.join(merged)} | evaluated {','.join(evaluated)}"
        if cfg.get("resume", True) and store.done(unit):
            done = store.load(unit)
            scores, detail = done["scores"], done["detail"]
            log.info("%s: finished in an earlier run, taken from %s", mid, store.root)
        else:
            ctx = MergeContext(pool, merged, vectors, shared if method.devec else [],
                               val_limit=cfg.vision.get("val_limit"), seed=int(cfg.seed), progress=run.progress)
            with run.stage("merging", mid):
                params, info = method.merge(ctx)
            with run.stage("evaluation", mid):
                scores = evaluate(pool, params, evaluated, split="test", limit=cfg.vision.get("test_limit"))
            detail = {"config": mcfg, "test": scores, **{k: v for k, v in info.items() if k != "val_curve"}}
            store.save(unit, {"scores": scores, "detail": detail})
        rows.append({"id": mid, "method": label, "paper": method.paper, **scores})  # paper: false = extra row
        details[mid] = detail
        run.log({f"{mid}/{k}": v for k, v in scores.items()})
        log.info("%s: avg %.2f", label, scores["avg"])
    return rows, details


# ---------------------------------------------------------------- Table 1: multi-task merging

def table1(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Merge the task vectors of all tasks with each method, with and without DeVec; accuracy per task (Table 1)."""
    names = list(cfg.vision.tasks)
    tasks, pool = _setup(cfg, run, names, names)
    shared, sharing = _shared_if_needed(cfg, run, pool, names)
    rows, details = merge_and_evaluate(cfg, run, pool, tasks, tasks, shared)
    columns = ["method", *names, "avg"]
    individual = next((r for r in rows if r["id"] == INDIVIDUAL), None)
    paper = save_beside_paper(cfg, run, "table1", "table1_accuracy", rows, columns,
                              title="Table 1: multi-task merging, top-1 accuracy (%)")
    result: dict[str, Any] = {"tasks": names, "rows": rows, "details": details, "pool": pool.info, "paper": paper,
                              "sharing": sharing}
    if individual:
        norm = [{"id": r["id"], "method": r["method"], **normalized(r, individual, names)} for r in rows]
        run.save_table("table1_normalized", norm, columns, title="Table 1: normalized accuracy (% of individual)")
        result["normalized"] = norm
    result["effects"] = devec_effect(rows, {mid: m.baseline for mid, m, _ in _methods(cfg)})
    result["regime"] = table1_regime(result)
    _print_table(rows, columns, result["effects"], result["regime"])
    return result


TABLE1_REGIME = (
    # id, check, (row a, row b, '-': a - b or '/': 100 a / b), low and high bound (None: open)
    ("gain_individual", "Individual - Pre-Trained (avg, points)", ("individual", "pretrained", "-"), 25.0, None),
    ("gain_task_arithmetic", "Task Arithmetic (lambda on val) - Pre-Trained (avg, points)",
     ("task_arithmetic_val", "pretrained", "-"), 8.0, None),
    ("ta_over_wa", "Task Arithmetic (lambda on val) - Weight Averaging (avg, points)",
     ("task_arithmetic_val", "weight_average", "-"), 0.0, None),
    ("adamerging_over_ta", "AdaMerging (Layer) - Task Arithmetic (lambda on val) (avg, points)",
     ("adamerging_layer", "task_arithmetic_val", "-"), 3.0, None),
    ("ta_normalized", "Task Arithmetic (lambda on val) / Individual (avg, %)",
     ("task_arithmetic_val", "individual", "/"), 60.0, 90.0),
)
"""Table 1's regime: the properties of the literature's CLIP merging that its claims presuppose (merging beats the
pre-trained model and Weight Averaging, AdaMerging (Layer) beats Task Arithmetic, Task Arithmetic keeps most of
Individual), with the bounds a faithful miniature should meet. The paper's value of each comes from its Table 1
(Task Arithmetic's row for ours with lambda on validation)."""


def table1_regime(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The regime checks of one Table 1 run (:mod:`devec.report.regime`) from its results' ``rows``: those whose rows
    the run has."""
    from devec.paper_numbers import TABLE1, paper_value
    from devec.report.regime import check_record

    avg = {r["id"]: float(r["avg"]) for r in results["rows"] if "avg" in r}
    paper = {rid: paper_value(TABLE1, "task_arithmetic" if rid == "task_arithmetic_val" else rid, "avg")
             for rid in avg}
    out = []
    for cid, text, (a, b, op), low, high in TABLE1_REGIME:
        if a not in avg or b not in avg:
            continue
        value = avg[a] - avg[b] if op == "-" else 100.0 * avg[a] / avg[b]
        pa, pb = paper.get(a), paper.get(b)
        ref = None if pa is None or pb is None else (pa - pb if op == "-" else 100.0 * pa / pb)
        out.append(check_record(cid, text, value, low, high, paper=ref))
    return out


def _shared_if_needed(cfg: DictConfig, run: Run, pool: VisionPool, names: Sequence[str]
                      ) -> tuple[list[dict[str, torch.Tensor]] | None, dict[str, Any] | None]:
    """DeVec's pairwise shared vectors of the merged tasks, when a method adds them, and the summary of their
    sharing against chance per layer (table ``sharing``)."""
    if not any(m.devec for _, m, _ in _methods(cfg)):
        return None, None
    with run.stage("task_vectors"):
        vectors = pool.task_vectors(list(names))
    with run.stage("decomposition", "pairwise"):
        sharing: dict[str, Any] = {}
        shared = pairwise_shared(vectors, cfg.decomposition, run.cache_dir, on_report=lambda rep: sharing.update(
            save_sharing(run, rep, "Pairwise sharing of the merged task vectors per layer (mean per pair)",
                         label="pairwise DeVec")))
    return shared, sharing


def devec_effect(rows: Sequence[Mapping[str, Any]], baselines: Mapping[str, str | None],
                 metrics: Sequence[str] = ("avg",)) -> list[dict[str, Any]]:
    """For each row naming a ``baseline`` row id: DeVec's effect on each of ``metrics`` (accuracy, higher is better)
    as :func:`devec.report.effects.effect_record`s, ``id`` the DeVec row's and ``baseline_id`` its baseline's."""
    from devec.report.effects import effect_record

    by_id = {r["id"]: r for r in rows}
    out = []
    for mid, base_id in baselines.items():
        if base_id is None or mid not in by_id:
            continue
        if base_id not in by_id:
            raise ValueError(f"methods.{mid}.baseline={base_id!r}: no row has that id ({', '.join(by_id)})")
        base, row = by_id[base_id], by_id[mid]
        out += [effect_record(mid, f"{row['method']} vs {base['method']}", f"{m} accuracy (%)", row[m], base[m],
                              higher_is_better=True, baseline_id=base_id) for m in metrics]
    return out


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], effects: Sequence[Mapping[str, Any]],
                 regime: Sequence[Mapping[str, Any]] = ()) -> None:
    from devec.report.effects import print_effects
    from devec.report.regime import print_checks
    from devec.runtime import markdown_table

    print("\n" + markdown_table(rows, columns, floatfmt=".1f"))
    print_effects(effects)
    print_checks(regime)


# ---------------------------------------------------------------- Table 2: generalization to held-out tasks

def table2(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Merge the seen tasks only; accuracy on seen and on held-out (unseen) tasks (Table 2)."""
    seen, unseen = list(cfg.vision.tasks), list(cfg.vision.unseen)
    tasks, pool = _setup(cfg, run, seen + unseen, seen)
    shared, sharing = _shared_if_needed(cfg, run, pool, seen)
    merged = {n: tasks[n] for n in seen}
    rows, details = merge_and_evaluate(cfg, run, pool, merged, tasks, shared)
    table = []
    for r in rows:
        table.append({"id": r["id"], "method": r["method"], "paper": r["paper"], **{n: r[n] for n in seen},
                      "seen avg": _mean(r, seen),
                      **{n: r[n] for n in unseen}, "unseen avg": _mean(r, unseen)})
    columns = ["method", *seen, "seen avg", *unseen, "unseen avg"]
    paper = save_beside_paper(cfg, run, "table2", "table2_generalization", table, columns,
                              title="Table 2: seen / unseen tasks, accuracy (%)")
    present = {r["id"] for r in table}  # a DeVec row whose baseline is not a Table 2 row has no effect here
    baselines = {mid: m.baseline for mid, m, _ in _methods(cfg) if m.baseline in present}
    effects = devec_effect(table, baselines, ("seen avg", "unseen avg"))
    _print_table(table, columns, effects)
    return {"seen": seen, "unseen": unseen, "rows": table, "details": details, "paper": paper, "effects": effects,
            "sharing": sharing}


def _mean(row: Mapping[str, float], names: Sequence[str]) -> float:
    return sum(row[n] for n in names) / max(1, len(names))


# ---------------------------------------------------------------- Table 3: leave-one-out ablation

TABLE3_ROWS = {"zero_shot": "Zero-shot", "task_arithmetic": "Task Arithmetic", "tv_shared": "TV+Shared",
               "unique_shared": "Unique+Shared", "unique_only": "Unique only", "shared_only": "Shared only"}
"""Table 3's rows in the paper's order: id -> label."""

TABLE3_BASELINES = {"tv_shared": "task_arithmetic", "unique_shared": "task_arithmetic",
                    "unique_only": "task_arithmetic", "shared_only": "task_arithmetic"}
"""Table 3's comparisons, DeVec row id -> baseline row id. Sec. 4.1 measures every ablation row against Task
Arithmetic ("Shared Only ... outperforming task arithmetic by 3.19%"; the unique rows "can degrade performance",
Unique only 55.29 against Task Arithmetic's 58.32): the row whose coefficients are fitted the same way on the plain
task vectors, so each difference is what the decomposed parts change."""


def table3_effects(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("avg",)) -> list[dict[str, Any]]:
    """Table 3's effect records (each row of TABLE3_BASELINES against its baseline, within the run's seed) on each
    of ``metrics``: the average over the targets by default, target names for one record per target."""
    return devec_effect(rows, TABLE3_BASELINES, metrics)


def table3(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """For each target: decompose the remaining vectors (pairwise by default, the caption's "between pairs"); fit
    one coefficient per vector of each row on the target's train split; accuracy on its test split (Table 3)."""
    targets = list(cfg.vision.tasks)
    a = cfg.vision.ablation
    pool_names = list(dict.fromkeys([*targets, *(a.get("extra") or [])]))
    tasks, pool = _setup(cfg, run, pool_names, pool_names)  # an embedded pool fine-tunes on each task
    limit = cfg.vision.get("test_limit")
    table = {rid: {"id": rid, "method": label} for rid, label in TABLE3_ROWS.items()}
    dims: dict[str, Any] = {"id": "shared_dim", "method": "shared dim (mean per layer)"}
    sharing: dict[str, dict[str, Any]] = {}
    coefficients: dict[str, dict[str, list[float]]] = {}
    for target in run.progress(targets, desc="leave-one-out"):
        others = [n for n in pool_names if n != target]
        with run.stage("decomposition", target):
            parts, dims[target] = _ablation_parts(pool.task_vectors(others), cfg.decomposition, a, run.cache_dir,
                                              on_report=lambda rep, t=target: sharing.__setitem__(t, save_sharing(
                                                  run, rep, f"Table 3 without {t}: sharing per layer",
                                                  name=f"sharing_{slug(t)}", label=f"Table 3 without {t}")))
        with run.stage("evaluation", f"{target} zero_shot"):
            table["zero_shot"][target] = evaluate(pool, pool.pretrained, {target: tasks[target]}, limit=limit)[target]
        coefficients[target] = {}
        for rid, vecs in parts.items():
            with run.stage("training", f"{target} {rid}"):
                params, coefficients[target][rid] = _fit_on_target(cfg, pool, tasks[target], target, vecs)
            with run.stage("evaluation", f"{target} {rid}"):
                table[rid][target] = evaluate(pool, params, {target: tasks[target]}, limit=limit)[target]
        run.log({f"table3/{target}/{rid}": table[rid][target] for rid in table} | {f"table3/{target}/shared_dim":
                                                                                     dims[target]})
    rows = [*table.values(), dims]
    for r in rows:
        r["avg"] = _mean(r, targets)
    columns = ["method", *targets, "avg"]
    paper = save_beside_paper(cfg, run, "table3", "table3_ablation", rows, columns,
                              title=f"Table 3: leave-one-out ablation ({a.get('mode', 'pairwise')} shared components, "
                                    f"unique = {a.get('unique', 'iterative')}), accuracy on the target (%)")
    effects = table3_effects(rows)
    _print_table(rows, columns, effects)
    return {"targets": targets, "pool": pool_names, "rows": rows, "coefficients": coefficients,
            "settings": OmegaConf.to_container(a, resolve=True), "paper": paper, "sharing": sharing,
            "effects": effects}


def _ablation_parts(vectors: list[dict[str, torch.Tensor]], decomposition: Mapping[str, Any], a: Mapping[str, Any],
                    cache_dir: Path | None, on_report: Callable[[list], Any] | None = None
                    ) -> tuple[dict[str, list[dict[str, torch.Tensor]]], float]:
    """The vectors each fitted row adds, and the mean shared dimension per decomposed layer (``on_report``: called
    with the per-layer report of the decomposition the shared rows come from)."""
    if a.get("mode", "pairwise") == "joint":
        settings = DecompositionSettings.from_config(decomposition, mode="joint")
        md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(cache_dir), progress=False)
        shared, unique = [md.merged_shared], list(md.unique)
    else:
        settings = DecompositionSettings.from_config(decomposition, mode="pairwise")
        md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(cache_dir), progress=False)
        shared = md.pairwise_dense()
        unique = pairwise_unique(vectors, decomposition, str(a.get("unique", "iterative")), cache_dir)
    dims = [r["shared_dim"] for r in md.report if "shared_dim" in r]
    if on_report is not None:
        on_report(md.report)
    like = vectors[0]
    shared = [_fill(s, like) for s in shared]
    unique = [_fill(u, like) for u in unique]
    parts = {"task_arithmetic": vectors, "tv_shared": vectors + shared, "unique_shared": unique + shared,
             "unique_only": unique, "shared_only": shared}
    return parts, sum(dims) / max(1, len(dims))


def pairwise_unique(vectors: list[dict[str, torch.Tensor]], decomposition: Mapping[str, Any], how: str,
                    cache_dir: Path | None = None) -> list[dict[str, torch.Tensor]]:
    """Each vector's unique part under pairwise mode (the paper does not define it; ``vision.ablation.unique``).

    ``iterative``: W_i with what it shares with each other vector removed in turn (the iterative mode of Sec. 4.3).
    ``projection``: W_i minus its projection onto the span of all its pairwise shared subspaces Z_ij, j != i.
    """
    if how == "iterative":
        out = []
        for i in range(len(vectors)):
            settings = DecompositionSettings.from_config(decomposition, mode="iterative", target=i)
            md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(cache_dir), progress=False)
            out.append(dict(md.unique_target))
        return out
    if how != "projection":
        raise ValueError(f"vision.ablation.unique={how!r}: use iterative or projection")
    settings = DecompositionSettings.from_config(decomposition, mode="joint")
    shared: list[dict[str, list[torch.Tensor]]] = [{} for _ in vectors]
    policy: list[dict[str, torch.Tensor]] = [{} for _ in vectors]
    decomposed: set[str] = set()
    for i, j in combinations(range(len(vectors)), 2):
        md = decompose_model([vectors[i], vectors[j]], settings, basis_fn=settings.basis_fn(cache_dir),
                             progress=False)
        decomposed |= {r["name"] for r in md.report if r.get("action") == "decompose"}
        for side, k in ((0, i), (1, j)):
            for name, s in md.shared[side].items():
                shared[k].setdefault(name, []).append(s)
            policy[k].update(md.unique[side])
    return [{n: (_residual(v[n], shared[k][n]) if n in decomposed else policy[k][n])
             for n in policy[k]} for k, v in enumerate(vectors)]


def _residual(w: torch.Tensor, shared: Sequence[torch.Tensor], rtol: float = 1e-6) -> torch.Tensor:
    """``w`` minus its projection onto the span of the columns of ``shared`` (each P_ij w, whose columns span Z_ij)."""
    m = w.reshape(w.shape[0], -1).double()
    stacked = torch.cat([s.reshape(s.shape[0], -1).double() for s in shared], dim=1)
    u, sv, _ = torch.linalg.svd(stacked, full_matrices=False)
    q = u[:, sv > rtol * sv.max()] if sv.numel() and sv.max() > 0 else u[:, :0]
    return (m - q @ (q.T @ m)).reshape(w.shape).to(w.dtype)


def _fit_on_target(cfg: DictConfig, pool: VisionPool, task: Task, target: str, vectors: list[dict[str, torch.Tensor]]
                   ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Coefficients of ``vectors`` fitted by cross-entropy on the target's train split; the merged parameters."""
    from devec.vision.adamerging import MergedParams
    from devec.vision.train import fit_coefficients

    a = cfg.vision.ablation
    merged = MergedParams(pool.pretrained, vectors, [float(a.init)] * len(vectors), str(a.granularity))
    fit_coefficients(pool.model.visual, pool.heads[target], task.train, merged, int(a.steps), float(a.lr),
                     int(a.batch_size), seed=int(cfg.seed))
    with torch.no_grad():
        params = {k: v.detach() for k, v in merged().items()}
    return params, merged.coefficients.detach().flatten().tolist()


def _fill(vector: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters a component lacks (policy ``exclude``) are zero: not edited."""
    return {k: vector[k] if k in vector else torch.zeros_like(v) for k, v in like.items()}


# ---------------------------------------------------------------- Figs. 2, 3, 9: shared vs unique on an unseen target

def fig2_fig3(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """For each group (Fig. 2: 3 sources, Figs. 3 and 9: 2), decompose the sources jointly; add each task vector,
    each unique component and the merged shared one (eq. 14) to the pre-trained model with coefficient alpha;
    accuracy on the unseen target over alpha, one curve each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(str(g.get("figure") or f"group {i}"), list(g.sources), str(g.target))
              for i, g in enumerate(cfg.vision.arithmetic.groups)]
    alphas = [float(x) for x in cfg.vision.arithmetic.alphas]
    all_sources = list(dict.fromkeys(s for _, g, _ in groups for s in g))
    tasks, pool = _setup(cfg, run, all_sources + [t for _, _, t in groups], all_sources)
    rows, results = [], {}
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, (figure, sources, target) in zip(axes[0], groups, strict=True):
        with run.stage("task_vectors", figure):
            vectors = pool.task_vectors(sources)
        settings = DecompositionSettings.from_config(cfg.decomposition, mode="joint")
        with run.stage("decomposition", figure):
            md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(run.cache_dir), progress=False)
        components = {**{f"TV {s}": v for s, v in zip(sources, vectors, strict=True)},
                      **{f"unique {s}": _fill(u, vectors[0]) for s, u in zip(sources, md.unique, strict=True)},
                      "shared": _fill(md.merged_shared, vectors[0])}
        key = f"{figure}: {'+'.join(sources)} -> {target}"
        report = [r for r in md.report if "shared_dim" in r]
        results[key] = {"figure": figure, "sources": sources, "target": target,
                        "shared_dim": sum(r["shared_dim"] for r in report) / max(1, len(report)),
                        "shared_energy": sum(r["shared_energy"] for r in report) / max(1, len(report)),
                        "sharing": save_sharing(run, md.report, f"{key}: joint sharing per layer",
                                                name=f"sharing_{slug(figure)}_{slug(target)}", label=key),
                        "curves": {}}
        for comp, vec in components.items():
            with run.stage("evaluation", f"{figure} {comp}"):
                accs = [evaluate(pool, combine(pool.pretrained, [vec], [alpha]), {target: tasks[target]},
                                 limit=cfg.vision.get("test_limit"))[target] for alpha in alphas]
            rows += [{"figure": figure, "sources": "+".join(sources), "target": target, "component": comp,
                      "alpha": alpha, "accuracy": acc, "shared_dim": results[key]["shared_dim"]}
                     for alpha, acc in zip(alphas, accs, strict=True)]
            results[key]["curves"][comp] = accs
            style = "-" if comp == "shared" else ("--" if comp.startswith("unique") else ":")
            ax.plot(alphas, accs, style, marker="o", label=comp)
        ax.set_title(f"{key}\n(shared dim {results[key]['shared_dim']:.1f} per layer, "
                     f"energy {results[key]['shared_energy']:.0%})", fontsize=8)
        ax.set_xlabel("coefficient alpha")
        ax.set_ylabel(f"{target} accuracy (%)")
        ax.legend(fontsize=7)
    columns = ["figure", "sources", "target", "component", "alpha", "accuracy", "shared_dim"]
    run.save_table("fig2_fig3_arithmetic", rows, columns,
                   title="Figs. 2, 3, 9: task vectors, unique components and the shared component on an unseen target")
    run.save_figure("fig2_fig3_arithmetic", fig)
    return {"alphas": alphas, "groups": results, "rows": rows}
