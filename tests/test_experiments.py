"""experiments/: one recipe per paper table or figure, each a multirun over seeds plus the report that gathers it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "experiments").glob("[a-z]*.sh"))
EXPERIMENTS = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
# Experiment configs that are tools or building blocks, not a paper artefact of their own.
NOT_ARTEFACTS = {"decompose", "toxicity_train_dora", "vision_merge", "style_mixing", "style_figure", "vision_finetune"}


def _run(recipe: Path, tmp_path: Path, *args: str, seeds: str | None = None) -> list[list[str]]:
    """Run a recipe with fake `devec` and `devec-report` that record their arguments; the calls in order."""
    bindir, log = tmp_path / "bin", tmp_path / "calls.log"
    bindir.mkdir(exist_ok=True)
    for tool in ("devec", "devec-report"):
        fake = bindir / tool
        fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" {tool} "$@" >> "{log}"\nprintf "\\n" >> "{log}"\n')
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    if seeds is not None:
        env["SEEDS"] = seeds
    subprocess.run(["bash", str(recipe), *args], check=True, env=env, capture_output=True, text=True)
    return [line.strip("\0").split("\0") for line in log.read_text().splitlines() if line]


def _experiment(recipe: Path) -> str:
    return re.search(r"^reproduce (\S+)", recipe.read_text(), re.M).group(1)


def test_every_paper_artefact_has_a_recipe():
    missing = EXPERIMENTS - NOT_ARTEFACTS - {_experiment(r) for r in RECIPES}
    assert not missing, f"no recipe in experiments/ for {sorted(missing)}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_runs_a_seed_multirun_then_the_report(recipe, tmp_path):
    experiment = _experiment(recipe)
    assert experiment in EXPERIMENTS, f"{recipe.name} names an unknown experiment {experiment!r}"
    calls = _run(recipe, tmp_path, "scale=paper", "device=cuda", seeds="3,4")
    assert calls == [["devec", "-m", f"experiment={experiment}", "seed=3,4", "scale=paper", "device=cuda"],
                     ["devec-report", experiment]]


def test_default_seeds_are_three(tmp_path):
    calls = _run(REPO / "experiments" / "table1.sh", tmp_path)
    assert "seed=0,1,2" in calls[0]
