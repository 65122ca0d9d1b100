"""Resume: a run killed at any point restarts from its last finished unit and gives the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from devec import resume
from devec.resume import UnitStore, config_hash, resumable

REPO = Path(__file__).resolve().parents[1]

# A small run of 6 units, each an SVD of a seeded matrix (tensors) and a few numbers (JSON). The environment
# can make it SIGKILL itself right after unit KILL_AFTER is stored, or halfway through writing unit KILL_WRITING.
SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    from devec import io
    from devec.resume import UnitStore, resumable

    torch.set_num_threads(1)
    store = UnitStore(sys.argv[1])
    computed = open(sys.argv[2], "a")
    kill_after, kill_writing = os.environ.get("KILL_AFTER"), os.environ.get("KILL_WRITING")
    units = [f"layer.{i}" for i in range(6)]
    current = {}

    save = io.save_safetensors
    def dying_save(path, tensors, metadata=None):
        if current.get("unit") == kill_writing:
            from safetensors.torch import save as to_bytes
            data = to_bytes({k: v.contiguous() for k, v in tensors.items()}, metadata)
            with io.atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        return save(path, tensors, metadata)
    io.save_safetensors = dying_save

    def unit(name):
        current["unit"] = name
        i = int(name.split(".")[1])
        w = torch.randn(120, 80, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        u, s, _ = torch.linalg.svd(w, full_matrices=False)
        computed.write(name + "\\n"); computed.flush()
        return {"U": u[:, :10].contiguous(), "s": s, "top": float(s[0]), "name": name}

    store_save = store.save
    def save_then_die(name, obj):
        store_save(name, obj)
        if name == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return obj
    store.save = save_then_die

    out = resumable(units, store, unit)
    final = {n: {"top": r["top"], "s_sum": float(r["s"].sum()), "u_abs": float(r["U"].abs().sum())}
             for n, r in out.items()}
    io.write_json(sys.argv[3], final)
    """
)


def _run(tmp_path: Path, store: Path, log: Path, result: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "unit_run.py"
    script.write_text(SCRIPT)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, str(script), str(store), str(log), str(result)], env=full_env,
                          capture_output=True, text=True, timeout=120)


def _computed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_sigkill_after_a_unit_and_mid_write_resume_to_identical_results(tmp_path):
    reference = _run(tmp_path, tmp_path / "ref", tmp_path / "ref.log", tmp_path / "ref.json")
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "ref.json").read_text())

    store, log, result = tmp_path / "store", tmp_path / "run.log", tmp_path / "run.json"
    killed = _run(tmp_path, store, log, result, KILL_AFTER="layer.2")
    assert killed.returncode == -signal.SIGKILL and not result.exists()
    assert _computed(log) == ["layer.0", "layer.1", "layer.2"]

    killed = _run(tmp_path, store, log, result, KILL_WRITING="layer.4")
    assert killed.returncode == -signal.SIGKILL and not result.exists()
    assert _computed(log)[3:] == ["layer.3", "layer.4"]  # resumed after layer.2, died writing layer.4
    leftovers = [p for p in (store / "units").iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the half-written temporary file should be left behind by the kill"
    partial = UnitStore(store)
    assert partial.done("layer.3") and not partial.done("layer.4")

    finished = _run(tmp_path, store, log, result)
    assert finished.returncode == 0, finished.stderr
    assert _computed(log)[5:] == ["layer.4", "layer.5"]  # only the unfinished units ran again
    assert json.loads(result.read_text()) == expected


def test_roundtrip_of_json_and_tensor_units(tmp_path):
    store = UnitStore(tmp_path)
    assert not store.done("a")
    store.save("a", {"acc": 0.25, "rows": [{"coef": 0.1, "x": 1}]})
    t = torch.randn(5, 3, dtype=torch.float64)
    store.save("eval/task=cars coef=0.3", {"weight": t, "bias": torch.arange(3), "n": 7, "label": "x"})
    store.save("b", [1.5, 2.5])
    again = UnitStore(tmp_path)
    assert again.units() == ["a", "eval/task=cars coef=0.3", "b"]
    assert again.load("a") == {"acc": 0.25, "rows": [{"coef": 0.1, "x": 1}]}
    mixed = again.load("eval/task=cars coef=0.3")
    assert torch.equal(mixed["weight"], t) and mixed["weight"].dtype == torch.float64
    assert torch.equal(mixed["bias"], torch.arange(3)) and mixed["n"] == 7 and mixed["label"] == "x"
    assert again.load("b") == [1.5, 2.5]
    with pytest.raises(KeyError, match="not finished"):
        again.load("c")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_unit_is_not_done_and_is_recomputed(tmp_path, damage):
    store = UnitStore(tmp_path)
    store.save("u", {"w": torch.ones(50, 50)})
    (path,) = (tmp_path / "units").iterdir()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-100])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    else:
        path.unlink()
    fresh = UnitStore(tmp_path)
    assert not fresh.done("u")
    calls = []
    out = resumable(["u"], fresh, lambda u: calls.append(u) or {"w": torch.ones(50, 50)})
    assert calls == ["u"] and torch.equal(out["u"]["w"], torch.ones(50, 50))
    assert UnitStore(tmp_path).done("u")


def test_unit_file_without_manifest_entry_is_not_done(tmp_path):
    """A kill between writing the unit's file and recording it in the manifest: the unit runs again."""
    store = UnitStore(tmp_path)
    store.save("first", {"x": 1})
    manifest = (tmp_path / "manifest.json").read_text()
    store.save("second", {"x": 2})
    (tmp_path / "manifest.json").write_text(manifest)  # as if killed before the manifest update
    fresh = UnitStore(tmp_path)
    assert fresh.done("first") and not fresh.done("second")
    calls = []
    resumable(["first", "second"], fresh, lambda u: calls.append(u) or {"x": 0})
    assert calls == ["second"]


def test_resumable_reports_progress_and_skips_finished_units(tmp_path):
    store = UnitStore(tmp_path)
    seen = []

    def progress(items, desc):
        seen.append(desc)
        return items

    resumable(["a", "b"], store, lambda u: {"u": u}, progress=progress, desc="coefficients")
    calls = []
    out = resumable(["a", "b", "c"], store, lambda u: calls.append(u) or {"u": u})
    assert seen == ["coefficients"] and calls == ["c"]
    assert out == {"a": {"u": "a"}, "b": {"u": "b"}, "c": {"u": "c"}}


def test_fresh_and_resumed_units_come_back_in_the_same_form(tmp_path):
    fresh = resumable(["u"], UnitStore(tmp_path), lambda u: {"pair": (1, 2), 3: "x"})
    resumed = resumable(["u"], UnitStore(tmp_path), lambda u: pytest.fail("recomputed a finished unit"))
    assert fresh == resumed == {"u": {"pair": [1, 2], "3": "x"}}


def test_store_is_keyed_by_what_the_run_computes(tmp_path, monkeypatch):
    base = {"seed": 0, "decomposition": {"tau": 0.85, "rank": "energy:0.9"}, "paths": {"output_dir": "/a"},
            "logger": {"mode": "offline"}, "tags": []}
    cfg = OmegaConf.create(base)
    moved = OmegaConf.create({**base, "paths": {"output_dir": "/b"}, "logger": {"mode": "online"}, "tags": ["x"]})
    other_tau = OmegaConf.create({**base, "decomposition": {"tau": 0.9, "rank": "energy:0.9"}})
    other_seed = OmegaConf.create({**base, "seed": 1})
    assert config_hash(cfg) == config_hash(moved) == config_hash(dict(base))
    assert len({config_hash(cfg), config_hash(other_tau), config_hash(other_seed)}) == 3
    interpolated = OmegaConf.create({**base, "name": "${hydra:runtime.choices.experiment}", "x": "${seed}"})
    assert config_hash(interpolated) == config_hash(interpolated)  # resolves what it can outside a Hydra app
    assert UnitStore.for_config(tmp_path, cfg).root == UnitStore.for_config(tmp_path, moved).root
    before = config_hash(cfg)
    monkeypatch.setattr(resume, "code_fingerprint", lambda: "other code")
    assert config_hash(cfg) != before  # units stored by other code are not reused
    assert UnitStore.for_config(tmp_path, cfg).root.parent == tmp_path / "runs"
