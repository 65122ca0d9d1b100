"""The vision runner end to end at the tiny preset: Tables 1-3 and Figs. 2/3, as the ``devec`` command runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from devec.cli import execute

from .conftest import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_table1_cli_runs_every_method_with_and_without_devec_and_reuses_the_cache(tmp_path):
    cache = Path(os.environ["DEVEC_CACHE"])  # the session's cache: later tests reuse the models built here
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "devec", "experiment=table1_multitask", "pool=vision/tiny", "data=vision/tiny",
           "vision.threads=1"]
    p = subprocess.run([*cmd, f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    labels = [r["method"] for r in results["rows"]]
    assert {"Pre-Trained", "Fine-Tuned", "Fisher Merging", "RegMean", "Task Arithmetic", "Task Arithmetic + DeVec",
            "AdaMerging++ (Task)", "AdaMerging (Task) + DeVec", "AdaMerging (Layer) + DeVec",
            "TIES-Merging + DeVec"} <= set(labels)
    tasks = results["tasks"]
    for row in results["rows"]:
        assert all(0.0 <= row[t] <= 100.0 for t in tasks)
        assert abs(row["avg"] - sum(row[t] for t in tasks) / len(tasks)) < 1e-9
    individual = next(r for r in results["normalized"] if r["id"] == "individual")
    assert all(abs(individual[t] - 100.0) < 1e-9 for t in tasks if results["rows"][1][t] > 0)
    assert results["details"]["task_arithmetic"]["lambda"] == 0.3  # [48]'s fixed lambda
    assert results["details"]["task_arithmetic_devec_grid"]["mu"] in [0.0, 0.05, 0.1, 0.2, 0.3]
    learned = results["details"]["task_arithmetic_devec"]  # supervised: split, steps, lr recorded
    assert (learned["split"], learned["steps"], learned["lr"]) == ("train", 4, 1.0e-3)
    assert len(learned["task_coefficients"]) == len(tasks)
    assert len(learned["shared_coefficients"]) == len(tasks) * (len(tasks) - 1) // 2
    assert len(results["effects"]) == 6
    # each DeVec row against its like-for-like baseline: the same coefficient fitting without the shared vectors
    assert {(e["baseline_id"], e["id"]) for e in results["effects"]} == {
        ("task_arithmetic_learned", "task_arithmetic_devec"), ("task_arithmetic_val", "task_arithmetic_devec_grid"),
        ("ties", "ties_devec"), ("adamerging_task", "adamerging_task_devec"),
        ("adamerging_layer", "adamerging_layer_devec"), ("adamerging_plus_layer", "adamerging_plus_layer_devec")}
    assert [r["paper"] for r in results["rows"]] == sorted((r["paper"] for r in results["rows"]), reverse=True)
    # the regime checks: every one of Table 1's, computed from the run's own rows, printed with their bounds
    avg = {r["id"]: r["avg"] for r in results["rows"]}
    regime = {c["id"]: c for c in results["regime"]}
    assert set(regime) == {"gain_individual", "gain_task_arithmetic", "ta_over_wa", "adamerging_over_ta",
                           "ta_normalized"}
    assert regime["adamerging_over_ta"]["value"] == pytest.approx(avg["adamerging_layer"] - avg["task_arithmetic_val"])
    assert "Regime (one run" in p.stdout and "AdaMerging (Layer) - Task Arithmetic (lambda on val)" in p.stdout
    assert "Task Arithmetic + DeVec" in (run / "table1_accuracy.md").read_text()
    assert (run / "table1_normalized.csv").exists() and list((run / "wandb").glob("offline-run-*"))
    assert "DeVec" in p.stdout and "| method |" in p.stdout
    models = sorted((cache / "vision" / "models").rglob("*.safetensors"))
    # the pre-trained CLIP and one fine-tuned encoder per task (seeded by its position); other tests of the session
    # may have cached encoders of other task lists beside them
    assert {"pretrained", *(f"{t}-{i}" for i, t in enumerate(tasks))} <= {m.stem for m in models}
    stamps = [m.stat().st_mtime_ns for m in models]
    p2 = subprocess.run([*cmd, "logger=none", "methods={}", "+method=vision/pretrained",
                         f"hydra.run.dir={tmp_path / 'run2'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "pre-train CLIP" not in p2.stderr and "fine-tune" not in p2.stderr
    assert [m.stat().st_mtime_ns for m in models] == stamps
    again = json.loads((tmp_path / "run2" / "results.json").read_text())["rows"][0]
    assert again == results["rows"][0]  # the cached models give the same pre-trained accuracies


def test_table2_reports_seen_and_unseen_tasks(tmp_path):
    cfg = tiny_cfg("table2_generalization", tmp_path, "vision.threads=1")
    with open_dict(cfg):
        for key in [k for k in cfg.methods if k not in ("pretrained", "task_arithmetic_devec")]:
            del cfg.methods[key]
    results = execute(cfg, tmp_path / "out")
    assert results["unseen"] == ["handwritten"] and "handwritten" not in results["seen"]
    row = results["rows"][-1]
    assert row["method"] == "Task Arithmetic + DeVec" and set(row) >= {"seen avg", "unseen avg", "handwritten"}
    assert (tmp_path / "out" / "table2_generalization.md").exists()


def test_table3_prints_the_papers_rows_by_targets_with_pairwise_shared_vectors(tmp_path):
    cfg = tiny_cfg("table3_ablation", tmp_path, "vision.ablation.steps=3", "decomposition.rank=energy:0.5",
                   "vision.ablation.extra=[textures]")
    results = execute(cfg, tmp_path / "out")
    targets = ["handwritten", "street_digits", "shapes"]
    assert results["targets"] == targets and results["pool"] == [*targets, "textures"]
    rows = {r["id"]: r for r in results["rows"]}
    assert [r["method"] for r in results["rows"]] == ["Zero-shot", "Task Arithmetic", "TV+Shared", "Unique+Shared",
                                                      "Unique only", "Shared only", "shared dim (mean per layer)"]
    for rid in ("zero_shot", "task_arithmetic", "tv_shared", "unique_shared", "unique_only", "shared_only"):
        assert all(0.0 <= rows[rid][t] <= 100.0 for t in targets)
        assert abs(rows[rid]["avg"] - sum(rows[rid][t] for t in targets) / 3) < 1e-9
    assert all(rows["shared_dim"][t] >= 0.0 for t in targets)
    k = 3  # remaining vectors per target: 3 task vectors, 3 unique parts, k(k-1)/2 = 3 pairwise shared vectors
    for t in targets:
        fitted = results["coefficients"][t]
        assert {r: len(c) for r, c in fitted.items()} == {"task_arithmetic": k, "tv_shared": 2 * k,
                                                          "unique_shared": 2 * k, "unique_only": k, "shared_only": 3}
    header = (tmp_path / "out" / "table3_ablation.md").read_text()
    assert "| method | handwritten | handwritten (paper) | handwritten Δ | street_digits |" in header


def test_fig2_fig3_draws_one_curve_per_task_vector_per_unique_part_and_the_shared_one(tmp_path):
    cfg = tiny_cfg("fig2_fig3_arithmetic", tmp_path, "vision.arithmetic.alphas=[0.0,1.0]")
    results = execute(cfg, tmp_path / "out")
    groups = results["groups"]
    assert list(groups) == ["Fig. 2: street_digits+shapes+textures -> handwritten",
                            "Fig. 3: shapes+textures -> street_digits"]
    for g in groups.values():
        sources = g["sources"]
        assert set(g["curves"]) == {*(f"TV {s}" for s in sources), *(f"unique {s}" for s in sources), "shared"}
        assert len({c[0] for c in g["curves"].values()}) == 1  # alpha 0: the pre-trained model for every curve
        assert g["shared_dim"] >= 0.0 and 0.0 <= g["shared_energy"] <= 1.0
    assert (tmp_path / "out" / "fig2_fig3_arithmetic.png").stat().st_size > 1000
    assert "shared_dim" in (tmp_path / "out" / "fig2_fig3_arithmetic.csv").read_text().splitlines()[0]


def test_table1_interrupted_after_a_method_resumes_with_the_same_results(tmp_path, monkeypatch):
    from devec.vision import methods

    keep = ("pretrained", "task_arithmetic", "ties")
    cfg = tiny_cfg("table1_multitask", tmp_path, "vision.threads=1")
    with open_dict(cfg):
        for key in [k for k in cfg.methods if k not in keep]:
            del cfg.methods[key]
    calls = []
    real = {cls: cls.merge for cls in (methods.Pretrained, methods.TaskArithmetic, methods.Ties)}

    def counted(limit: int | None):
        def merge(self, ctx):
            if limit is not None and len(calls) == limit:
                raise KeyboardInterrupt  # killed while the third method runs
            calls.append(type(self).__name__)
            return real[type(self)](self, ctx)
        return merge

    for cls in real:
        monkeypatch.setattr(cls, "merge", counted(2))
    try:
        execute(cfg, tmp_path / "first")
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "first" / "results.json").exists()
    for cls in real:
        monkeypatch.setattr(cls, "merge", counted(None))
    resumed = execute(cfg, tmp_path / "second")
    assert len(calls) == 3  # only the unfinished method ran again
    with open_dict(cfg):
        cfg.resume = False
    fresh = execute(cfg, tmp_path / "third")
    assert len(calls) == 6 and resumed["rows"] == fresh["rows"]
