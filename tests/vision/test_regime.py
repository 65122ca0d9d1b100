"""The embedded vision pool is in the merging regime of the task-vector literature (issue 14): fine-tuning gains far
more than zero-shot gives, Task Arithmetic beats both the pre-trained model and Weight Averaging, and the task
vectors share more than random subspaces of the same ranks would. The slow test runs the main job (``devec``) at
the embedded default, seed 0, from an empty cache; the fast ones check what the regime rests on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devec.vision import synthetic

from .conftest import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_the_seed_reaches_pretraining_and_fine_tuning(tmp_path):
    a = tiny_cfg("table1_multitask", tmp_path, "seed=0").pool
    b = tiny_cfg("table1_multitask", tmp_path, "seed=3").pool
    assert (a.seed, b.seed) == (0, 3)


def test_the_pretraining_corpus_shows_concepts_in_context_never_a_task_image():
    """A corpus image holds the drawing shrunk on another drawing: its border is the background's, not the task's."""
    x, y = synthetic.render_in_context("handwritten", 40, 0, 32, (0.4, 0.7), ("textures", "scenes"))
    assert x.shape == (40, 3, 32, 32) and sorted(set(y.tolist())) == list(range(10))
    full, _ = synthetic.render("handwritten", 40, 0, "test", 32)
    # handwritten test images are white digits on black: their borders are black; in context they are not
    border = lambda a: np.concatenate([a[..., 0, :], a[..., -1, :], a[..., :, 0], a[..., :, -1]], -1)  # noqa: E731
    assert border(full).mean() < 10
    assert border(x).mean() > 40


@pytest.mark.slow
def test_embedded_table1_is_in_the_merging_regime(tmp_path):
    env = {**os.environ, "DEVEC_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "devec", "logger=none", "seed=0", f"hydra.run.dir={tmp_path / 'run'}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    avg = {r["id"]: r["avg"] for r in results["rows"]}
    assert avg["individual"] - avg["pretrained"] >= 20          # fine-tuning gains far more than zero-shot gives
    assert avg["task_arithmetic_val"] - avg["pretrained"] >= 5   # Task Arithmetic (lambda on val) beats zero-shot
    assert avg["task_arithmetic_val"] > avg["weight_average"] - 1.0
    assert 50 <= 100 * avg["task_arithmetic_val"] / avg["individual"] <= 95
    sharing = results["sharing"]
    assert sharing["layers_above_chance"] > sharing["layers"] / 2   # most decomposed layers share above chance
    assert sharing["mean_shared_dim"] > 2 * sharing["mean_chance_dim"]
