"""Vision runner (Sec. 4.1): CLIP ViT multi-task merging with and without DeVec's pairwise shared components.

One function per table or figure, each named by its experiment's ``runner: {_target_: ...}``: :func:`table1`
(multi-task merging), :func:`table2` (held-out tasks), :func:`table3` (leave-one-out ablation of shared/unique
parts), :func:`fig2_fig3` (joint shared vs unique on an unseen target). Rows carry the method's id (its key under
``methods``) beside its display label; effects and normalization key on ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from devec.resume import UnitStore
from devec.runtime import Run
from devec.vectors import DecompositionSettings, decompose_model
from devec.vision.data import Task, load_tasks
from devec.vision.methods import MergeContext, Method, combine
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
    tasks = load_tasks(cfg.data, list(dict.fromkeys(evaluated)), run.cache_dir, run.progress)
    pool = load_pool(cfg.pool, cfg.data, tasks, finetuned, run.cache_dir, run.progress)
    return tasks, pool.to(cfg.get("device", "cpu"))


def pairwise_shared(vectors: list[dict[str, torch.Tensor]], decomposition: Mapping[str, Any],
                    cache_dir: Path | None = None) -> list[dict[str, torch.Tensor]]:
    """DeVec's pairwise merged shared components (eq. 14 for each pair i < j): k(k-1)/2 extra task vectors."""
    settings = DecompositionSettings.from_config(decomposition, mode="pairwise")
    md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(cache_dir), progress=False)
    return [md.pairwise_shared[pair] for pair in sorted(md.pairwise_shared)]


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
            params, info = method.merge(ctx)
            scores = evaluate(pool, params, evaluated, split="test", limit=cfg.vision.get("test_limit"))
            detail = {"config": mcfg, "test": scores, **{k: v for k, v in info.items() if k != "val_curve"}}
            store.save(unit, {"scores": scores, "detail": detail})
        rows.append({"id": mid, "method": label, **scores})
        details[mid] = detail
        run.log({f"{mid}/{k}": v for k, v in scores.items()})
        log.info("%s: avg %.2f", label, scores["avg"])
    return rows, details


# ---------------------------------------------------------------- Table 1: multi-task merging

def table1(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Merge the task vectors of all tasks with each method, with and without DeVec; accuracy per task (Table 1)."""
    names = list(cfg.vision.tasks)
    tasks, pool = _setup(cfg, run, names, names)
    shared = _shared_if_needed(cfg, run, pool, names)
    rows, details = merge_and_evaluate(cfg, run, pool, tasks, tasks, shared)
    columns = ["method", *names, "avg"]
    individual = next((r for r in rows if r["id"] == INDIVIDUAL), None)
    run.save_table("table1_accuracy", rows, columns, title="Table 1: multi-task merging, top-1 accuracy (%)")
    result: dict[str, Any] = {"tasks": names, "rows": rows, "details": details, "pool": pool.info}
    if individual:
        norm = [{"id": r["id"], "method": r["method"], **normalized(r, individual, names)} for r in rows]
        run.save_table("table1_normalized", norm, columns, title="Table 1: normalized accuracy (% of individual)")
        result["normalized"] = norm
    result["devec_effect"] = devec_effect(rows, {mid: m.baseline for mid, m, _ in _methods(cfg)})
    _print_table(rows, columns, result["devec_effect"])
    return result


def _shared_if_needed(cfg: DictConfig, run: Run, pool: VisionPool, names: Sequence[str]
                      ) -> list[dict[str, torch.Tensor]] | None:
    """DeVec's pairwise shared vectors of the merged tasks, when a method adds them."""
    if not any(m.devec for _, m, _ in _methods(cfg)):
        return None
    return pairwise_shared(pool.task_vectors(list(names)), cfg.decomposition, run.cache_dir)


def devec_effect(rows: Sequence[Mapping[str, Any]], baselines: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """For each row naming a ``baseline`` row id: the change of the average accuracy DeVec brings over it."""
    by_id = {r["id"]: r for r in rows}
    out = []
    for mid, base_id in baselines.items():
        if base_id is None or mid not in by_id:
            continue
        if base_id not in by_id:
            raise ValueError(f"methods.{mid}.baseline={base_id!r}: no row has that id ({', '.join(by_id)})")
        base, row = by_id[base_id], by_id[mid]
        out.append({"id": base_id, "devec_id": mid, "method": base["method"], "avg": base["avg"],
                    "avg_devec": row["avg"], "delta": row["avg"] - base["avg"]})
    return out


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], effect: Sequence[Mapping[str, Any]]
                 ) -> None:
    from devec.runtime import markdown_table

    print("\n" + markdown_table(rows, columns, floatfmt=".1f"))
    for e in effect:
        verdict = "helps" if e["delta"] > 0 else ("hurts" if e["delta"] < 0 else "does not change")
        print(f"DeVec {verdict} {e['method']}: average {e['avg']:.2f} -> {e['avg_devec']:.2f} ({e['delta']:+.2f})")


# ---------------------------------------------------------------- Table 2: generalization to held-out tasks

def table2(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Merge the seen tasks only; accuracy on seen and on held-out (unseen) tasks (Table 2)."""
    seen, unseen = list(cfg.vision.tasks), list(cfg.vision.unseen)
    tasks, pool = _setup(cfg, run, seen + unseen, seen)
    shared = _shared_if_needed(cfg, run, pool, seen)
    merged = {n: tasks[n] for n in seen}
    rows, details = merge_and_evaluate(cfg, run, pool, merged, tasks, shared)
    table = []
    for r in rows:
        table.append({"id": r["id"], "method": r["method"], **{n: r[n] for n in seen}, "seen avg": _mean(r, seen),
                      **{n: r[n] for n in unseen}, "unseen avg": _mean(r, unseen)})
    columns = ["method", *seen, "seen avg", *unseen, "unseen avg"]
    run.save_table("table2_generalization", table, columns, title="Table 2: seen / unseen tasks, accuracy (%)")
    from devec.runtime import markdown_table

    print("\n" + markdown_table(table, columns, floatfmt=".1f"))
    return {"seen": seen, "unseen": unseen, "rows": table, "details": details}


def _mean(row: Mapping[str, float], names: Sequence[str]) -> float:
    return sum(row[n] for n in names) / max(1, len(names))


# ---------------------------------------------------------------- Table 3: leave-one-out ablation

VARIANTS = ("TV+Shared", "Unique+Shared", "Unique only", "Shared only")


def table3(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """For each target: decompose the other tasks' vectors jointly; fit coefficients on the target's train split."""
    from devec.vision.adamerging import MergedParams
    from devec.vision.train import fit_coefficients

    names = list(cfg.vision.tasks)
    tasks, pool = _setup(cfg, run, names, names)
    a = cfg.vision.ablation
    rows = []
    for target in run.progress(names, desc="leave-one-out"):
        others = [n for n in names if n != target]
        vectors = pool.task_vectors(others)
        settings = DecompositionSettings.from_config(cfg.decomposition, mode="joint")
        md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(run.cache_dir), progress=False)
        parts = {
            "TV+Shared": vectors + [md.merged_shared],
            "Unique+Shared": [_fill(u, vectors[0]) for u in md.unique] + [md.merged_shared],
            "Unique only": [_fill(u, vectors[0]) for u in md.unique],
            "Shared only": [md.merged_shared],
        }
        dims = [r["shared_dim"] for r in md.report if "shared_dim" in r]
        row: dict[str, Any] = {"target": target, "shared_dim": sum(dims) / max(1, len(dims))}
        limit = cfg.vision.get("test_limit")
        row["Pre-trained"] = evaluate(pool, pool.pretrained, {target: tasks[target]}, limit=limit)[target]
        for variant in VARIANTS:
            vecs = [_fill(v, vectors[0]) for v in parts[variant]]
            merged = MergedParams(pool.pretrained, vecs, [float(a.init)] * len(vecs), str(a.granularity))
            fit_coefficients(pool.model.visual, pool.heads[target], tasks[target].train, merged, int(a.steps),
                             float(a.lr), int(a.batch_size), seed=int(cfg.seed))
            with torch.no_grad():
                params = {k: v.detach() for k, v in merged().items()}
            row[variant] = evaluate(pool, params, {target: tasks[target]}, limit=cfg.vision.get("test_limit"))[target]
        rows.append(row)
        run.log({f"table3/{target}/{k}": v for k, v in row.items() if k != "target"})
    keys = ["Pre-trained", *VARIANTS, "shared_dim"]
    rows.append({"target": "avg", **{k: sum(r[k] for r in rows) / len(rows) for k in keys}})
    columns = ["target", *keys]
    run.save_table("table3_ablation", rows, columns,
                   title="Table 3: leave-one-out ablation, accuracy on the target (%)")
    from devec.runtime import markdown_table

    print("\n" + markdown_table(rows, columns, floatfmt=".1f"))
    return {"rows": rows}


def _fill(vector: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters a component lacks (policy ``exclude``) are zero: not edited."""
    return {k: vector[k] if k in vector else torch.zeros_like(v) for k, v in like.items()}


# ---------------------------------------------------------------- Figs. 2, 3: shared vs unique on an unseen target

def fig2_fig3(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Add the joint shared (or unique, or whole) component of 3 task vectors to the pre-trained model; sweep alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(list(g.sources), str(g.target)) for g in cfg.vision.arithmetic.groups]
    alphas = [float(x) for x in cfg.vision.arithmetic.alphas]
    all_sources = list(dict.fromkeys(s for g, _ in groups for s in g))
    tasks, pool = _setup(cfg, run, all_sources + [t for _, t in groups], all_sources)
    rows, results = [], {}
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, (sources, target) in zip(axes[0], groups, strict=True):
        vectors = pool.task_vectors(sources)
        settings = DecompositionSettings.from_config(cfg.decomposition, mode="joint")
        md = decompose_model(vectors, settings, basis_fn=settings.basis_fn(run.cache_dir), progress=False)
        k = len(vectors)
        components = {
            "shared": _fill(md.merged_shared, vectors[0]),
            "unique": {n: sum(_fill(u, vectors[0])[n] for u in md.unique) / k for n in vectors[0]},
            "task vectors": {n: sum(v[n] for v in vectors) / k for n in vectors[0]},
        }
        key = f"{'+'.join(sources)} -> {target}"
        energy = [r["shared_energy"] for r in md.report if "shared_energy" in r]
        results[key] = {"shared_energy": sum(energy) / max(1, len(energy))}  # mean over decomposed layers
        for comp, vec in components.items():
            accs = []
            for alpha in alphas:
                acc = evaluate(pool, combine(pool.pretrained, [vec], [alpha]), {target: tasks[target]},
                               limit=cfg.vision.get("test_limit"))[target]
                accs.append(acc)
                rows.append({"sources": "+".join(sources), "target": target, "component": comp, "alpha": alpha,
                             "accuracy": acc})
            results[key][comp] = accs
            ax.plot(alphas, accs, marker="o", label=comp)
        ax.set_title(f"{key} (shared energy {results[key]['shared_energy']:.0%})", fontsize=8)
        ax.set_xlabel("coefficient alpha")
        ax.set_ylabel(f"{target} accuracy (%)")
        ax.legend(fontsize=7)
    run.save_table("fig2_fig3_arithmetic", rows, ["sources", "target", "component", "alpha", "accuracy"],
                   title="Figs. 2, 3: joint shared / unique components on an unseen target")
    run.save_figure("fig2_fig3_arithmetic", fig)
    return {"alphas": alphas, "curves": results}

