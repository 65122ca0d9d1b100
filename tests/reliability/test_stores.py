"""One rule for every cache and store: a damaged entry (bit flip, truncation, edited metadata, deleted file) is
recomputed with one warning and never trusted; a read-only cache is read, not written; folders get normal modes."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from devec import io, resume
from devec.cache import BasisCache
from devec.engine import column_basis
from devec.resume import UnitStore, resumable

CONF = str(Path(__file__).resolve().parents[2] / "conf")


# ---------------------------------------------------------------- damage helpers

def _flip(path: Path, where: float = 0.7) -> None:
    """Flip every bit of one byte of ``path``, ``where`` of the way into the file."""
    data = bytearray(path.read_bytes())
    pos = min(len(data) - 1, int(len(data) * where))
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_digit(path: Path, field: str) -> None:
    """Change the first digit written after ``field`` in the file's header (a one-digit metadata edit).

    A file that has no such field gets its header's first digit changed instead.
    """
    data = bytearray(path.read_bytes())
    at = max(data.find(field.encode()), 0)
    match = re.compile(rb"[0-9]").search(bytes(data), at + len(field))
    assert match is not None
    pos = match.start()
    data[pos] = ord("9") if data[pos] != ord("9") else ord("1")
    path.write_bytes(bytes(data))


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only: chmod, and for root (who ignores modes) refuse writes under them at the os level."""
    roots: list[Path] = []
    real_open, real_mkdir = os.open, os.mkdir

    def under(path) -> bool:
        p = Path(os.fsdecode(path)).absolute()
        return any(p == r or r in p.parents for r in roots)

    def guarded_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if under(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    def make(root: Path) -> Path:
        root = root.absolute()
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        roots.append(root)
        return root

    yield make
    for root in roots:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- the SVD (basis) cache

def _matrix() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(96, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 64, generator=g, dtype=torch.float64) \
        + 0.05 * torch.randn(96, 64, generator=g, dtype=torch.float64)  # float64: the exact route, rule on load


@pytest.mark.parametrize("damage", ["total_energy", "flip", "truncate"])
def test_damaged_basis_entry_is_recomputed_with_a_warning(tmp_path, caplog, damage):
    """Item 3: one digit of total_energy changed the kept rank silently; now every field read back is checksummed."""
    w, rule = _matrix(), "energy:0.9"
    expected = column_basis(w, rule)
    BasisCache(tmp_path).column_basis(w, rule)
    (entry,) = sorted(tmp_path.rglob("*.safetensors"))
    {"total_energy": lambda p: _edit_digit(p, "total_energy"), "flip": _flip, "truncate": _truncate}[damage](entry)
    cache = BasisCache(tmp_path)
    with caplog.at_level(logging.WARNING):
        got = cache.column_basis(w, rule)
    assert got.rank == expected.rank and torch.equal(got.U, expected.U)
    assert got.total_energy == expected.total_energy
    assert cache.stats() == {"hits": 0, "misses": 1}
    assert len(_warnings(caplog, entry.name)) == 1
    healed = BasisCache(tmp_path)
    healed.column_basis(w, rule)
    assert healed.stats() == {"hits": 1, "misses": 0}


def test_read_only_basis_cache_reads_hits_computes_misses_and_warns_once(tmp_path, caplog, read_only):
    w = _matrix()
    other = w.flip(0).contiguous()
    BasisCache(tmp_path / "bases").column_basis(w, "energy:0.9")
    before = _files(tmp_path)
    read_only(tmp_path)
    cache = BasisCache(tmp_path / "bases")
    with caplog.at_level(logging.WARNING):
        hit = cache.column_basis(w, "energy:0.5")
        miss = cache.column_basis(other, "energy:0.9")
        cache.column_basis(other.flip(1).contiguous(), "energy:0.9")
    assert torch.equal(hit.U, column_basis(w, "energy:0.5").U)
    assert torch.equal(miss.U, column_basis(other, "energy:0.9").U)
    assert cache.stats() == {"hits": 1, "misses": 2}
    assert _files(tmp_path) == before  # nothing stored
    assert len(_warnings(caplog, "read-only")) == 1


def test_a_cache_folder_that_cannot_be_created_fails_at_once_with_a_hint(tmp_path):
    from devec.runtime import Run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"cache folder .*a_file.*(DEVEC_CACHE|paths\.cache_dir)") as err:
        Run(out_dir=tmp_path / "out", cache_dir=blocker / "cache")
    assert "decomposition.cache=false" in str(err.value)


# ---------------------------------------------------------------- the unit store (resume)

def _store_with_units(root: Path) -> UnitStore:
    store = UnitStore(root)
    store.save("a", {"w": torch.arange(6.0), "n": 1})
    store.save("b", {"x": 2})
    return store


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "record", "manifest"])
def test_damaged_unit_is_recomputed_with_one_warning(tmp_path, caplog, damage):
    _store_with_units(tmp_path)
    manifest = tmp_path / resume.MANIFEST
    record = json.loads(manifest.read_text())["a"]
    unit_file = tmp_path / record["file"]
    if damage == "flip":
        _flip(unit_file)
    elif damage == "truncate":
        _truncate(unit_file)
    elif damage == "delete":
        unit_file.unlink()
    elif damage == "record":  # the manifest names b's file for a: a record edited by hand
        data = json.loads(manifest.read_text())
        data["a"] = {**data["b"], "kind": "tensors"}
        manifest.write_text(json.dumps(data))
    else:
        manifest.write_text(manifest.read_text()[:-20])
    calls = []
    with caplog.at_level(logging.WARNING):
        fresh = UnitStore(tmp_path)
        out = resumable(["a", "b"], fresh, lambda u: calls.append(u) or {"w": torch.arange(6.0), "n": 1})
    assert "a" in calls and torch.equal(out["a"]["w"], torch.arange(6.0)) and out["a"]["n"] == 1
    assert len(_warnings(caplog, "damaged")) == 1
    assert UnitStore(tmp_path).done("a")


def test_read_only_unit_store_keeps_new_units_for_this_run(tmp_path, caplog, read_only):
    _store_with_units(tmp_path / "runs" / "r")
    before = _files(tmp_path)
    read_only(tmp_path)
    store = UnitStore(tmp_path / "runs" / "r")
    calls = []
    with caplog.at_level(logging.WARNING):
        out = resumable(["a", "b", "c"], store, lambda u: calls.append(u) or {"v": (1, 2)})
    assert calls == ["c"] and out["c"] == {"v": [1, 2]} and out["b"] == {"x": 2}
    assert _files(tmp_path) == before
    assert len(_warnings(caplog, "read-only")) == 1


# ---------------------------------------------------------------- vision: data, heads, models

def _vision_data_cfg() -> dict:
    return {"_target_": "devec.vision.data.SyntheticTasks", "image_size": 16, "n_train": 24, "n_test": 12,
            "val_fraction": 0.1, "val_seed": 0}


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_vision_task_data_is_rendered_again(tmp_path, caplog, damage):
    from devec.vision.data import load_tasks

    first = load_tasks(_vision_data_cfg(), ["shapes"], tmp_path)["shapes"]
    (entry,) = sorted((tmp_path / "vision" / "data").glob("shapes-*.safetensors"))
    (_flip if damage == "flip" else _truncate)(entry)
    with caplog.at_level(logging.WARNING):
        again = load_tasks(_vision_data_cfg(), ["shapes"], tmp_path)["shapes"]
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.images, first.test.images)
    assert len(_warnings(caplog, entry.name)) == 1


@pytest.mark.parametrize("damage", ["flip_every_file", "delete_one_file"])
def test_damaged_pretraining_corpus_is_rendered_again(tmp_path, caplog, damage):
    from devec.vision.data import pretraining_corpus

    x, captions = pretraining_corpus(["shapes", "textures"], 6, 16, tmp_path)
    files = sorted((tmp_path / "vision" / "data").iterdir())
    if damage == "flip_every_file":  # the images and, wherever they are kept, the captions
        for f in files:
            _flip(f, 0.5)
    else:  # the last file of the entry goes (its captions, where they are kept beside the images)
        files[-1].unlink()
    with caplog.at_level(logging.WARNING):
        x2, captions2 = pretraining_corpus(["shapes", "textures"], 6, 16, tmp_path)
    assert torch.equal(x2, x) and captions2 == captions


class _TextModel(torch.nn.Module):
    """Just enough of a CLIP for zero-shot heads: an embedding of token ids and a logit scale."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(64, 8)
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.0))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.emb(tokens).mean(1)


def _tokenize(texts):
    return torch.tensor([[sum(map(ord, t)) % 64, len(t) % 64] for t in texts])


def test_damaged_zero_shot_head_is_computed_again(tmp_path, caplog):
    from devec.vision.heads import cached_head

    torch.manual_seed(0)
    model = _TextModel()
    head = cached_head(model, _tokenize, ["cat", "dog"], ["a {c}."], "m", tmp_path)
    (entry,) = sorted((tmp_path / "vision" / "heads").glob("*.safetensors"))
    _flip(entry, 0.95)
    with caplog.at_level(logging.WARNING):
        again = cached_head(model, _tokenize, ["cat", "dog"], ["a {c}."], "m", tmp_path)
    assert torch.equal(again, head)
    assert len(_warnings(caplog, entry.name)) == 1


def _vision_pool(cache: Path):
    from devec.vision.data import load_tasks
    from devec.vision.pool import load_pool

    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table1_multitask", "pool=vision/tiny", "data=vision/tiny"])
    names = ["shapes", "textures"]
    pool_cfg = OmegaConf.to_container(cfg.pool, resolve=True)
    pool_cfg["pretrain"]["tasks"] = names
    tasks = load_tasks(cfg.data, names, cache)
    return load_pool(pool_cfg, cfg.data, tasks, names, cache)


def test_damaged_vision_models_are_trained_again(tmp_path, caplog):
    pool = _vision_pool(tmp_path)
    models = tmp_path / "vision" / "models"
    pretrained = next(models.rglob("pretrained.safetensors"))
    finetuned = sorted(p for p in models.rglob("*.safetensors") if p.parent.name.startswith("finetuned"))
    _flip(pretrained, 0.9)
    _edit_digit(finetuned[0], "key")  # the metadata of a fine-tuned encoder
    finetuned[1].unlink()
    with caplog.at_level(logging.WARNING):
        again = _vision_pool(tmp_path)
    for name in pool.finetuned:
        assert all(torch.equal(again.finetuned[name][k], v) for k, v in pool.finetuned[name].items())
    assert all(torch.equal(again.pretrained[k], v) for k, v in pool.pretrained.items())
    assert len(_warnings(caplog, "damaged")) == 2  # the deleted file is a plain miss


def test_moved_cache_is_reused_and_a_code_change_rebuilds(tmp_path, monkeypatch):
    from devec import store
    from devec.vision import data as vdata

    first = vdata.load_tasks(_vision_data_cfg(), ["shapes"], tmp_path / "a")["shapes"]
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.setattr(vdata.synthetic, "render", lambda *a, **k: pytest.fail("rendered again after a move"))
    moved = vdata.load_tasks(_vision_data_cfg(), ["shapes"], tmp_path / "b")["shapes"]
    assert torch.equal(moved.test.images, first.test.images)
    monkeypatch.setattr(store, "code_version", lambda *modules: "changed renderer")
    with pytest.raises(pytest.fail.Exception, match="rendered again"):
        vdata.load_tasks(_vision_data_cfg(), ["shapes"], tmp_path / "b")


# ---------------------------------------------------------------- style: shape classifier, tiny Flux and LoRAs

def test_damaged_shape_classifier_is_trained_again(tmp_path, caplog):
    from devec.style.metrics import shape_classifier

    first = shape_classifier(tmp_path, 16, images=24, steps=2)
    (entry,) = sorted((tmp_path / "style").glob("shape_classifier*.safetensors"))
    _flip(entry, 0.9)
    with caplog.at_level(logging.WARNING):
        again = shape_classifier(tmp_path, 16, images=24, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    assert len(_warnings(caplog, entry.name)) == 1


def _style_pool() -> dict:
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=style_mixing", "pool=style/tiny", "data=style/tiny"])
    pool = OmegaConf.to_container(cfg.pool, resolve=True)
    pool["base_train"].update(images=16, vae_steps=1, steps=1)
    pool["lora_train"].update(images=8, steps=1)
    pool["styles"] = pool["styles"][:2]
    return pool


def test_style_loras_and_base_are_rebuilt_when_damaged_and_retrained_without_resume(tmp_path, caplog):
    from devec.style.train import build_embedded

    pool = _style_pool()
    base, loras = build_embedded(pool, tmp_path)
    first, second = (Path(p) for p in loras.values())
    stamp = second.stat().st_mtime_ns
    _flip(first, 0.6)
    weights = sorted(base.rglob("*.safetensors"))[0]
    weights.unlink()  # a file of the saved base pipeline goes, its model_index.json stays
    with caplog.at_level(logging.WARNING):
        base2, loras2 = build_embedded(pool, tmp_path)
    assert weights.exists() and base2 == base
    assert Path(loras2[first.stem]).read_bytes() != b"" and second.stat().st_mtime_ns == stamp
    messages = " ".join(_warnings(caplog, "damaged"))
    assert first.name in messages and "base" in messages
    build_embedded(pool, tmp_path, resume=False)
    assert second.stat().st_mtime_ns != stamp  # resume=false trains every LoRA again


def test_style_images_resume_as_units(tmp_path):
    from devec.cli import CONFIG_DIR, execute
    from devec.style import runner

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "experiment=style_mixing", "pool=style/tiny", "data=style/tiny", "logger=none", "name=style_mixing",
            "method.schedule=[1.0]", "data.seeds=[0]", "pool.base_train.steps=1", "pool.base_train.vae_steps=1",
            "pool.lora_train.steps=1", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={tmp_path}"])
    first = execute(cfg, tmp_path / "one")
    real = runner.generate
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    runner.generate = counting
    try:
        again = execute(cfg, tmp_path / "two")
        assert calls == [] and again["rows"] == first["rows"]
        OmegaConf.update(cfg, "resume", False)
        execute(cfg, tmp_path / "three")
        assert len(calls) == len(first["rows"])
    finally:
        runner.generate = real


# ---------------------------------------------------------------- toxicity: the embedded pool's directories

def test_toxicity_pool_member_with_a_deleted_shard_is_rebuilt(tmp_path, caplog):
    from devec.toxicity.tiny import build_embedded_pool

    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table4_toxicity", "pool=toxicity/tiny", "data=toxicity/tiny"])
    spec = OmegaConf.to_container(cfg.pool.build, resolve=True)
    spec["pretrain"].update(steps=2, n_texts=40)
    for member in spec["members"].values():
        if member is not None:
            member.update(steps=1, n_pairs=8)
    built = build_embedded_pool(spec, tmp_path)
    full = next(m for m in built["members"].values() if m["kind"] == "full")
    shard = sorted(Path(full["path"]).glob("*.safetensors"))[0]
    shard.unlink()  # config.json stays: today the member is taken as built
    dora = next(m for m in built["members"].values() if m["kind"] == "dora")
    _flip(sorted(Path(dora["path"]).glob("*.safetensors"))[0], 0.9)
    with caplog.at_level(logging.WARNING):
        again = build_embedded_pool(spec, tmp_path)
    assert again == built and shard.exists()
    assert len(_warnings(caplog, "damaged")) == 2


# ---------------------------------------------------------------- atomic folders and their permissions

def test_atomic_folders_get_normal_permissions(tmp_path):
    """mkdtemp makes 0700 folders: a cache folder built through one must end up like any other folder."""
    from devec.io import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "made") as tmp:
            (tmp / "f.txt").write_text("x")
        assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o755
        from devec import store

        built = store.built_dir(tmp_path / "built", {"k": 1}, lambda tmp: (tmp / "f.txt").write_text("x"))
        written = io.write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(built.stat().st_mode) == 0o755
    for f in (tmp_path / "made" / "f.txt", built / "f.txt", written):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
