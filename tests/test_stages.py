"""Per-stage time and memory (issue 15 item 3): ``Run.stage`` rows, their peaks, and ``stages`` in results.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from devec import runtime
from devec.cli import CONFIG_DIR, execute
from devec.loggers import NullLogger
from devec.runtime import Run, stage

RESETS = runtime._reset_peaks()  # False where the peak resident memory cannot be reset per stage (not Linux)


class Recorder(NullLogger):
    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log(self, metrics, step=None) -> None:
        self.logged.append(dict(metrics))


def touch(mib: int) -> np.ndarray:
    """``mib`` MiB of resident memory (every page written)."""
    return np.ones(mib * 2 ** 20 // 8)


def test_a_stage_records_its_seconds_and_logs_them(tmp_path):
    logger = Recorder()
    run = Run(tmp_path / "out", tmp_path / "cache", logger=logger)
    with run.stage("decomposition", "pairwise"):
        time.sleep(0.05)
    (row,) = run.stages
    assert row["stage"] == "decomposition" and row["detail"] == "pairwise"
    assert row["seconds"] >= 0.05
    assert row["peak_rss_mib"] > 0 and row["cuda_peak_mib"] is None  # this process never touched CUDA
    assert logger.logged == [{"stage/decomposition/seconds": row["seconds"],
                              "stage/decomposition/peak_rss_mib": row["peak_rss_mib"]}]


@pytest.mark.skipif(not RESETS, reason="no per-stage reset of the peak resident memory on this system")
def test_each_stage_has_its_own_memory_peak(tmp_path):
    run = Run(tmp_path / "out", tmp_path / "cache")
    with run.stage("big"):
        block = touch(300)
        del block
    with run.stage("small"):
        touch(1)
    big, small = run.stages
    assert big["peak_rss_mib"] - small["peak_rss_mib"] > 200  # the 300 MiB of the first stage are not the second's


@pytest.mark.skipif(not RESETS, reason="no per-stage reset of the peak resident memory on this system")
def test_an_enclosing_stage_keeps_the_peak_reached_before_and_inside_an_inner_one(tmp_path):
    run = Run(tmp_path / "out", tmp_path / "cache")
    with run.stage("outer"):
        block = touch(300)  # the outer stage's peak, freed before the inner stage resets the counter
        del block
        with run.stage("inner"):
            touch(1)
    inner, outer = run.stages
    assert outer["peak_rss_mib"] - inner["peak_rss_mib"] > 200


def test_a_failing_stage_is_recorded_as_failed_and_the_error_goes_on(tmp_path):
    run = Run(tmp_path / "out", tmp_path / "cache")
    with pytest.raises(MemoryError), run.stage("evaluation"):
        raise MemoryError("out of memory")
    assert run.stages[0]["stage"] == "evaluation" and run.stages[0]["failed"] == "MemoryError"


def test_module_stage_records_into_the_active_run_only(tmp_path):
    run = Run(tmp_path / "out", tmp_path / "cache")
    with stage("load"):  # no active run: nothing to record into
        pass
    assert run.stages == []
    with run.active(), stage("load"):
        pass
    assert [r["stage"] for r in run.stages] == ["load"]
    with stage("later"):  # the run is no longer active
        pass
    assert len(run.stages) == 1


def test_results_json_lists_the_stages_of_a_run(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=decompose", "logger=none", "name=decompose",
                                           f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "run"
    results = execute(cfg, out)
    written = json.loads((out / "results.json").read_text())
    assert [r["stage"] for r in written["stages"]] == ["load", "decomposition", "save"]
    assert written["stages"] == results["stages"]
    assert all(r["seconds"] >= 0 and r["peak_rss_mib"] > 0 for r in written["stages"])
    assert sum(r["seconds"] for r in written["stages"]) <= written["seconds"]


def test_a_failed_run_leaves_the_stages_it_measured(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError("out of memory in the decomposition")

    monkeypatch.setattr("devec.vectors.runner.decompose_model", broken)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=decompose", "logger=none", "name=decompose",
                                           f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "run"
    with pytest.raises(MemoryError):
        execute(cfg, out)
    assert not (out / "results.json").exists()
    stages = json.loads((out / "stages.json").read_text())
    assert [(r["stage"], r.get("failed")) for r in stages] == [("load", None), ("decomposition", "MemoryError")]


def test_stage_line_names_seconds_and_peaks():
    line = runtime.stage_line({"stage": "load", "seconds": 1.24, "peak_rss_mib": 812.4, "cuda_peak_mib": 5120.0})
    assert line == "1.2 s, peak RSS 812 MiB, CUDA peak 5120 MiB"
    assert "process peak" in runtime.stage_line({"seconds": 1.0, "peak_rss_mib": 10.0, "cuda_peak_mib": None,
                                                 "rss_from_stage_start": False})


@pytest.mark.slow
def test_the_vision_runner_times_each_stage_on_the_tiny_preset(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table1_multitask", "pool=vision/tiny", "data=vision/tiny",
                                           "logger=none", "name=table1_multitask", f"paths.root_dir={tmp_path}",
                                           "resume=false"])
    results = execute(cfg, Path(tmp_path) / "run")
    names = [r["stage"] for r in results["stages"]]
    assert names[0] == "load" and {"task_vectors", "decomposition", "merging", "evaluation"} <= set(names)
    merged = {r["detail"] for r in results["stages"] if r["stage"] == "merging"}
    assert merged == {row["id"] for row in results["rows"]}  # one merging stage per method row
