"""The ``devec`` command end to end, as a user runs it (subprocess, offline, tiny settings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def devec(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVEC_OUTPUTS": str(tmp / "outputs"), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "devec", *args, f"hydra.run.dir={tmp / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_toy_recovery_writes_results_table_and_plot_and_logs_offline(tmp_path):
    p = devec("experiment=toy_recovery", "toy.n=200", "toy.m=120", "toy.shared=20", "toy.unique=20",
              "decomposition.rank=fixed:40", "toy.sigmas=[0.0,0.4]", "toy.repeats=1", tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["rows"][0]["mean_angle_deg"] < 1e-4 and results["rows"][0]["shared_dim"] == 20
    assert results["rows"][1]["mean_angle_deg"] > results["rows"][0]["mean_angle_deg"]
    assert (run / "fig8_recovery.png").stat().st_size > 1000 and (run / "fig8_recovery.csv").exists()
    assert (run / "config.yaml").exists() and list((run / "wandb").glob("offline-run-*"))


def test_toy_alternative_first_side_is_identical(tmp_path):
    p = devec("experiment=toy_alternative", "toy.runs=3", "toy.side=first", "logger=none", tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["max_angle_deg"] < 1e-5 and results["same_dimension"]


def test_decompose_users_checkpoints_writes_components(tmp_path):
    gen = torch.Generator().manual_seed(0)
    pre = {"w": torch.randn(12, 10, generator=gen), "b": torch.randn(12, generator=gen)}
    common = torch.randn(12, 2, generator=gen)
    paths = []
    for i in range(3):
        update = torch.cat([common, torch.randn(12, 2, generator=gen)], 1) @ torch.randn(4, 10, generator=gen)
        ft = {"w": pre["w"] + update, "b": pre["b"] + 0.1}
        save_file(ft, tmp_path / f"ft{i}.safetensors")
        paths.append(str(tmp_path / f"ft{i}.safetensors"))
    save_file(pre, tmp_path / "pre.safetensors")
    p = devec("experiment=decompose", "logger=none", f"pool.pretrained={tmp_path / 'pre.safetensors'}",
              f"pool.finetuned=[{','.join(paths)}]", "decomposition.rank=full", tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    run = tmp_path / "run"
    shared, unique = load_file(run / "shared_1.safetensors"), load_file(run / "unique_1.safetensors")
    ft1 = load_file(paths[1])
    torch.testing.assert_close(shared["w"] + unique["w"], ft1["w"] - pre["w"], atol=1e-5, rtol=0)
    assert json.loads((run / "results.json").read_text())["mean_shared_dim"] == 2
    assert "| w | 12x10 | decompose |" in (run / "layers.md").read_text()


@pytest.mark.parametrize(
    ("override", "message"),
    [("decomposition.tau=1.5", "tau must be in (0, 1]"),
     ("decomposition.rank=energy:0", "rank rule"),
     ("pool.finetuned=[{pre}]", "at least two"),
     ("pool.finetuned=[{pre},{bad}]", "contains NaN or Inf"),
     ("pool.finetuned=[{pre},{module}]", "weights_only"),
     ("pool.finetuned={pre}", "in brackets, 'pool.finetuned=["),
     ("+decomposition.tua=0.9", "decomposition.tua: unknown key")],
)
def test_bad_input_stops_with_one_message_and_no_results(tmp_path, override, message):
    pre = {"w": torch.randn(5, 4)}
    save_file(pre, tmp_path / "pre.safetensors")
    save_file({"w": torch.full((5, 4), float("nan"))}, tmp_path / "bad.safetensors")
    torch.save(torch.nn.Linear(4, 5), tmp_path / "module.pt")
    files = {"pre": tmp_path / "pre.safetensors", "bad": tmp_path / "bad.safetensors", "module": tmp_path / "module.pt"}
    args = [f"pool.pretrained={files['pre']}", "logger=none", "experiment=decompose"]
    if "finetuned" not in override:
        args.append(f"pool.finetuned=[{files['pre']},{files['pre']}]")
    p = devec(*args, override.format(**files), tmp=tmp_path)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list((tmp_path / "run").glob("*.safetensors"))


def test_a_tau_sweep_reuses_cached_svds_and_matches_an_uncached_run(tmp_path):
    cache = tmp_path / "cache"

    def run(tau: str, use_cache: bool, name: str) -> dict:
        env = {**os.environ, "DEVEC_OUTPUTS": str(tmp_path / "outputs"), "DEVEC_CACHE": str(cache)}
        args = [sys.executable, "-m", "devec", "experiment=decompose", "logger=none", f"decomposition.tau={tau}",
                f"decomposition.cache={str(use_cache).lower()}", f"hydra.run.dir={tmp_path / name}"]
        p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return load_file(tmp_path / name / "unique_0.safetensors")

    def entries() -> set[Path]:
        return set((cache / "bases").rglob("*.safetensors"))

    first = run("0.8", True, "a")
    after_first = entries()
    assert after_first  # one SVD per decomposed layer and task vector
    second = run("0.9", True, "b")
    assert entries() == after_first  # the second tau computed no new SVD
    uncached = run("0.9", False, "c")
    for name in second:
        torch.testing.assert_close(second[name], uncached[name], rtol=0, atol=1e-6)
    assert any(not torch.equal(first[n], second[n]) for n in first)  # tau did change the result
