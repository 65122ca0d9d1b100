"""Issue 10's grab-bags and hand-written code: one definition per helper, torch schedulers that give exactly the
learning rates the embedded models were trained with, and trained adapters kept with the run, not in the cache."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_pre_hook

from devec import hub, store
from devec.schedules import WarmupCosineLR, warmup_linear

PACKAGE = Path(__file__).resolve().parents[2] / "devec"


def _modules() -> dict[str, ast.Module]:
    """Every module of the devec package, parsed, by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _imports(tree: ast.Module) -> set[str]:
    """Modules a tree imports, anywhere in it (lazy imports in functions included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _defined(name: str) -> list[str]:
    """The modules that define a top-level function or class ``name``."""
    return [mod for mod, tree in _modules().items()
            if any(isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == name for n in tree.body)]


# ---------------------------------------------------------------- grab-bags and duplicates

def test_no_paper_scale_module_imports_the_embedded_builder():
    """tiny.py builds the embedded pool; the recipe, streaming, runner, evaluation... must not depend on it."""
    allowed = {"devec.toxicity.tiny",
               "devec.toxicity.pool",  # its `kind: embedded` branch dispatches to the builder
               "devec.toxicity.synthetic"}  # untrained test pools reuse tiny_llama
    users = {mod for mod, tree in _modules().items() if "devec.toxicity.tiny" in _imports(tree)}
    assert users <= allowed, f"paper-scale modules import devec.toxicity.tiny: {sorted(users - allowed)}"


@pytest.mark.parametrize(("helper", "home"), [("config_key", ["devec.store"]), ("flatten", ["devec.report.collect"]),
                                              ("_flatten", []), ("resolve", ["devec.hub"]), ("_resolve", []),
                                              ("_cosine_lr", []), ("encode_pairs", ["devec.toxicity.recipe"]),
                                              ("dora_config", ["devec.toxicity.recipe"])])
def test_each_helper_is_defined_once(helper, home):
    assert _defined(helper) == home


def test_hub_downloads_and_locks_go_through_one_place_each():
    hub_users = {mod for mod, tree in _modules().items() if "huggingface_hub.snapshot_download" in _imports(tree)}
    assert hub_users == {"devec.hub"}
    assert not [mod for mod, tree in _modules().items() if "fcntl" in _imports(tree)]


def test_a_missing_local_checkpoint_names_the_setting_instead_of_asking_the_hub(tmp_path):
    from devec.toxicity.pool import load_pool

    cfg = {"_target_": "devec.toxicity.pool.HubPool", "base": str(tmp_path / "no-such-base"), "toxic": "toxic",
           "members": {}}
    with pytest.raises(FileNotFoundError, match="pool.base"):
        load_pool(cfg, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"pool\.finetuned\.mnist"):
        hub.resolve("checkpoints/mnist/finetuned", ["*.json"], key="pool.finetuned.mnist")
    assert hub.resolve(str(tmp_path), ["*.json"]) == tmp_path
    assert hub.is_repo_id("openai/clip-vit-base-patch32") and not hub.is_repo_id(str(tmp_path / "x"))


def test_a_manifest_that_is_not_a_record_is_rebuilt_not_a_traceback(tmp_path, caplog):
    built = store.built_dir(tmp_path / "d", {"k": 1}, lambda tmp: (tmp / "f.txt").write_text("x"))
    (built / store.MANIFEST).write_text(json.dumps(["not", "a", "record"]))
    with caplog.at_level(logging.WARNING):
        again = store.built_dir(tmp_path / "d", {"k": 1}, lambda tmp: (tmp / "f.txt").write_text("x"))
    assert store.verified_dir(again, {"k": 1}) and "damaged" in caplog.text


# ---------------------------------------------------------------- learning-rate schedules: identical to the bit

def _old_cosine(step: int, steps: int, lr: float, warmup: int) -> float:
    """devec.vision.train._cosine_lr as the embedded CLIP pool was trained with it (set before each step)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + torch.cos(torch.tensor((step - warmup) / max(1, steps - warmup) * torch.pi)).item())


def _rates(sched_fn, lr: float, steps: int) -> list[float]:
    """The learning rate of each optimizer step under the scheduler ``sched_fn(opt)``, stepped after each step."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched, rates = sched_fn(opt), []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


# (lr, steps, warm-up divisor): the vision presets (embedded, tiny) and a few others
COSINE = [(2e-3, 1500, 20), (2e-3, 200, 10), (2e-3, 20, 20), (1e-3, 12, 10), (3e-4, 777, 10), (1e-3, 300, 20)]


@pytest.mark.parametrize(("lr", "steps", "div"), COSINE)
def test_warmup_cosine_scheduler_gives_the_old_rates_exactly(lr, steps, div):
    warmup = max(1, steps // div)
    new = _rates(lambda opt: WarmupCosineLR(opt, steps, warmup), lr, steps)
    assert new == [_old_cosine(s, steps, lr, warmup) for s in range(steps)]


# the three LambdaLRs as they were written: style (base and LoRAs), the tiny LLaMA, the toxic DoRA recipe
LINEAR = [
    (1e-3, 1200, lambda steps: lambda i: min(1.0, (i + 1) / 50) * max(0.1, 1 - i / steps),
     lambda steps: dict(warmup=50, steps=steps, floor=0.1)),
    (3e-3, 1500, lambda steps: lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps),
     lambda steps: dict(warmup=20, steps=steps, floor=0.05)),
    (2e-4, 333, lambda steps: lambda s: min(1.0, (s + 1) / max(1, steps // 20)),
     lambda steps: dict(warmup=max(1, steps // 20))),
]


@pytest.mark.parametrize(("lr", "steps", "old", "new"), LINEAR)
def test_warmup_linear_scheduler_gives_the_old_rates_exactly(lr, steps, old, new):
    before = _rates(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, old(steps)), lr, steps)
    assert _rates(lambda opt: warmup_linear(opt, **new(steps)), lr, steps) == before


def test_training_loops_step_with_the_schedule(monkeypatch):
    """The rate each optimizer step of finetune_visual and train_lm sees is the schedule's rate of that step."""
    from devec.toxicity.tiny import tiny_llama, train_lm
    from devec.vision.data import ImageSet
    from devec.vision.train import finetune_visual

    seen: list[float] = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        model = torch.nn.Module()
        model.visual = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 8))
        images = ImageSet(torch.randint(0, 255, (16, 3, 4, 4), dtype=torch.uint8), torch.arange(16) % 2)
        finetune_visual(model, torch.randn(8, 2), images, steps=30, batch_size=4, lr=1e-3)
        vision, seen[:] = list(seen), []
        llama = tiny_llama(16, 8, 1, 2, 16, seed=0)
        train_lm(llama, [([4, 5, 6], [-100, 5, 6])], steps=25, batch_size=2, lr=3e-3, seed=0, pad_id=3)
    finally:
        hook.remove()
    assert vision == [_old_cosine(s, 30, 1e-3, 3) for s in range(30)]
    assert seen == [3e-3 * (min(1.0, (s + 1) / 20) * max(0.05, 1 - s / 25)) for s in range(25)]  # LambdaLR's order
    assert len(set(seen)) > 10 and len(set(vision)) > 10  # the rates really change from step to step


# ---------------------------------------------------------------- run outputs vs caches

def test_toxic_dora_adapters_are_written_into_the_run_folder_not_the_cache(tmp_path, monkeypatch):
    from devec.runtime import Run
    from devec.toxicity import recipe, runner
    from devec.toxicity.tiny import build_tokenizer

    base = tmp_path / "base"
    build_tokenizer(["a", "b"]).save_pretrained(base)
    written = []

    def fake_train(base, tok, pairs, recipe, epochs, out_dir, **kw):
        (Path(out_dir) / "adapter_config.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "adapter_config.json").write_text("{}")
        written.append(Path(out_dir))
        return {"steps": 1, "examples": len(pairs), "first_loss": 1.0, "last_loss": 0.5}

    monkeypatch.setattr(recipe, "train_dora", fake_train)
    monkeypatch.setattr(recipe, "toxic_pairs", lambda spec, limit=None: [("p", "r")])
    cfg = OmegaConf.create({"pool": {"_target_": "devec.toxicity.pool.HubPool", "base": str(base), "toxic": "toxic",
                                     "dtype": "float32",
                                     "recipe": {"datasets": {"rtp": {"epochs": 1}, "toxigen": {"epochs": 1}}}},
                            "method": {"_target_": "devec.toxicity.runner.DoraTraining", "datasets": None},
                            "device": "cpu", "seed": 0,
                            "paths": {"cache_dir": str(tmp_path / "cache")}})
    run = Run(out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    out = runner.train_toxic_dora(cfg, run)
    assert written == [run.out_dir / "adapters" / "rtp", run.out_dir / "adapters" / "toxigen"]
    assert {n: a["adapter"] for n, a in out["adapters"].items()} == {n: str(p) for n, p in
                                                                      zip(["rtp", "toxigen"], written, strict=True)}
    assert not any((tmp_path / "cache").rglob("adapter_config.json"))
