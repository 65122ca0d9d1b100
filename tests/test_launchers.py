"""Launcher presets: a real tiny tau sweep through Hydra's basic, joblib and submitit (local) launchers.

The same config and seed must give the same numbers whichever launcher (and process) ran it: seeds are part of
the config and of results.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=toy_alternative", "toy.runs=1", "toy.n=32", "toy.m=32", "toy.shared=4", "toy.unique=4",
        "decomposition.rank=fixed:8", "logger=none"]
SWEEPS = {
    "basic": ["decomposition.tau=0.8,0.9", "seed=3,4"],
    "local_joblib": ["decomposition.tau=0.8,0.9", "seed=3"],
    "local_submitit": ["decomposition.tau=0.8,0.9", "seed=3"],
}


def devec_multirun(out: Path, *overrides: str, timeout: int = 300) -> Path:
    """Run ``devec -m`` in a subprocess with outputs and caches under ``out``; returns the sweep directory."""
    env = {**os.environ, "DEVEC_OUTPUTS": str(out / "outputs"), "DEVEC_CACHE": str(out / "cache"),
           "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "devec", "-m", *TINY, *overrides]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep,) = (out / "outputs" / "multirun" / "toy_alternative").iterdir()
    return sweep


def jobs(sweep: Path) -> dict[tuple[float, int], dict]:
    """``{(tau, seed): results}`` of every job, checking each job's own config agrees with its results."""
    out = {}
    for results in sorted(sweep.glob("*/results.json")):
        job = results.parent
        res = json.loads(results.read_text())
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        assert res["seed"] == cfg["seed"]
        assert f"decomposition.tau={cfg['decomposition']['tau']}" in yaml.safe_load(
            (job / ".hydra" / "overrides.yaml").read_text())
        out[(cfg["decomposition"]["tau"], res["seed"])] = res
    return out


def numbers(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "seconds"}


@pytest.fixture(scope="module")
def sweep_of(tmp_path_factory):
    """``sweep_of(launcher)``: the jobs of that launcher's tiny sweep, run once per test module."""
    ran: dict[str, dict] = {}

    def get(launcher: str) -> dict:
        if launcher not in ran:
            out = tmp_path_factory.mktemp(launcher)
            ran[launcher] = {"dir": devec_multirun(out, f"hydra/launcher={launcher}", *SWEEPS[launcher])}
            ran[launcher]["jobs"] = jobs(ran[launcher]["dir"])
        return ran[launcher]

    return get


@pytest.mark.parametrize("launcher", [
    "basic",
    pytest.param("local_joblib", marks=pytest.mark.slow),  # ~30 s on 2 busy cores: loky starts fresh workers
    "local_submitit",
])
def test_launcher_runs_every_job_of_the_sweep_and_same_seed_gives_same_numbers(sweep_of, launcher):
    ran = sweep_of(launcher)["jobs"]
    expected = {(0.8, 3), (0.9, 3)} | ({(0.8, 4), (0.9, 4)} if launcher == "basic" else set())
    assert set(ran) == expected
    assert all(r["experiment"] == "toy_alternative" for r in ran.values())
    basic = sweep_of("basic")["jobs"]
    for key, results in ran.items():  # another launcher, other processes: the same numbers for the same seed
        assert numbers(results) == numbers(basic[key]), key
    # and the seed matters: the numbers are not constants of the experiment
    assert numbers(basic[(0.8, 3)])["mean_angle_deg"] != numbers(basic[(0.8, 4)])["mean_angle_deg"]


def test_submitit_preset_keeps_its_logs_and_results_beside_the_sweep(sweep_of):
    sweep = sweep_of("local_submitit")["dir"]
    assert len(list(sweep.glob(".submitit/*/*_result.pkl"))) == 2


@pytest.mark.parametrize("preset, expected", [
    ("local_joblib", {"n_jobs": 2}),
    ("slurm", {"partition": None, "gpus_per_node": 1, "timeout_min": 240, "array_parallelism": 8, "cpus_per_task": 8,
               "mem_gb": 64, "max_num_timeout": 2}),
])
def test_presets_compose_and_are_overridable(preset, expected):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=toy_alternative", f"hydra/launcher={preset}"],
                      return_hydra_config=True)
        moved = compose("config", overrides=["experiment=toy_alternative", f"hydra/launcher={preset}",
                                             *(f"hydra.launcher.{k}=7" for k in expected if k != "partition")],
                        return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert {k: launcher[k] for k in expected} == expected
    assert all(moved.hydra.launcher[k] == 7 for k in expected if k != "partition")


FAKE_SBATCH = '''#!{python}
"""sbatch stand-in: records the script, runs each array task in the background as SLURM would, prints the id."""
import os, re, subprocess, sys
script = sys.argv[-1]
text = open(script).read()
open(os.path.join(os.environ["FAKE_SLURM_DIR"], "sbatch.sh"), "w").write(text)
array = re.search(r"#SBATCH --array=(\\d+)-(\\d+)", text)
for i in range(int(array[1]), int(array[2]) + 1) if array else [0]:
    env = dict(os.environ, SLURM_JOB_ID=str(4300 + i), SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(i),
               SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="localhost",
               SLURM_PROCID="0", SLURM_LOCALID="0")
    subprocess.Popen(["bash", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("Submitted batch job 4242")
'''

FAKE_SRUN = '''#!{python}
"""srun stand-in: runs the command with SLURM's %A/%a/%j/%t filename patterns filled in."""
import os, subprocess, sys
args, files = sys.argv[1:], {{}}
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
env = os.environ
def fill(p):
    return (p.replace("%A", env["SLURM_ARRAY_JOB_ID"]).replace("%a", env["SLURM_ARRAY_TASK_ID"])
            .replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0"))
out = open(fill(files["--output"]), "a")
err = open(fill(files["--error"]), "a") if "--error" in files else out
sys.exit(subprocess.call(args, stdout=out, stderr=err))
'''


@pytest.mark.slow
def test_slurm_preset_submits_an_array_that_runs_the_sweep(tmp_path):
    """The slurm preset through submitit's real SLURM path, with sbatch/srun/sacct stand-ins that run locally."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN,
                       "sacct": "#!/bin/sh\necho 'JobID|State|NodeList'\n", "scancel": "#!/bin/sh\n"}.items():
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    os.environ["FAKE_SLURM_DIR"] = str(tmp_path)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    try:
        sweep = devec_multirun(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                               "hydra.launcher.array_parallelism=5", "hydra.launcher.timeout_min=30",
                               "decomposition.tau=0.8,0.9", "seed=3")
    finally:
        os.environ.pop("FAKE_SLURM_DIR")
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]
    sbatch = (tmp_path / "sbatch.sh").read_text()
    for flag in ("--partition=gpu", "--gpus-per-node=1", "--time=30", "--array=0-1%2", "--cpus-per-task=8",
                 "--mem=64GB"):
        assert f"#SBATCH {flag}" in sbatch, flag
    assert set(jobs(sweep)) == {(0.8, 3), (0.9, 3)}
