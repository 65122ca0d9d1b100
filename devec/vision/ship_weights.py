"""Regenerate the pre-trained embedded CLIPs devec ships (``devec/vision/weights/``): one safetensors file per seed
and ``manifest.json`` (per seed: the key of the config it was made from, the file's sha256, the zero-shot accuracy
per task, the command that made it).

    python -m devec.vision.ship_weights --seeds 0,1,2            # the embedded default, into devec/vision/weights
    devec-ship-weights --seeds 0 --out /tmp/weights              # elsewhere (the slow test compares it)
    devec-ship-weights --seeds 0 pool=vision/tiny data=vision/tiny --out /tmp/tiny   # Hydra overrides

A run of the embedded pool uses a shipped file only when :func:`devec.vision.pool.pretrain_key` of its config
(``arch``, ``pretrain``, corpus tasks, image size, seed) equals the file's key; otherwise it pre-trains as before.
Pre-training runs exactly as in a run (same function, same seed, ``vision.threads`` or ``pool.threads`` torch
threads), so the file equals what a run with ``pool.pretrained_weights=train`` builds on the same machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from devec import io, store
from devec.runtime import plain
from devec.vision.clip import build_clip, tokenizer, visual_state
from devec.vision.data import load_tasks, task_pool
from devec.vision.heads import zeroshot_head
from devec.vision.pool import (
    SHIPPED_DIR,
    SHIPPED_FORMAT,
    SHIPPED_MANIFEST,
    EmbeddedPool,
    VisionPool,
    _pretrain_code,
    head_inputs,
    pool_spec,
    pretrain_embedded,
    pretrain_key,
    shipped_manifest,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16}
EXPERIMENT = "table1_multitask"   # the composition whose pool and data the weights are made for


def compose_config(seed: int, overrides: Sequence[str] = ()) -> Any:
    """The run config of ``devec experiment=table1_multitask seed=<seed> <overrides>`` (the main job's)."""
    from hydra import compose, initialize_config_dir

    from devec.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"experiment={EXPERIMENT}", "logger=none", f"seed={seed}", *overrides])


def ship_one(cfg: Any, out: Path, cache_dir: Path, dtype: str = "float32", progress: Any = None) -> dict[str, Any]:
    """Pre-train the embedded CLIP ``cfg`` names, write ``clip-seed<seed>.safetensors`` to ``out``; its record."""
    spec = pool_spec(cfg.pool)
    if not isinstance(spec, EmbeddedPool):
        raise ValueError(f"pool._target_={cfg.pool.get('_target_')!r}: only the embedded pool "
                         f"(devec.vision.pool.EmbeddedPool) pre-trains a CLIP to ship")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    threads = cfg.vision.get("threads") or cfg.pool.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    pool_cfg, data_cfg = dataclasses.asdict(spec), dataclasses.asdict(task_pool(cfg.data))
    names = list(cfg.vision.tasks)
    corpus = list(plain(pool_cfg["pretrain"]).get("tasks") or names)
    key, seed = pretrain_key(pool_cfg, data_cfg, corpus), int(spec.seed)
    start = time.perf_counter()
    model, losses = pretrain_embedded(pool_cfg, data_cfg, corpus, cache_dir, progress)
    seconds = time.perf_counter() - start
    state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = Path(out) / f"clip-seed{seed}.safetensors"
    store.save_entry(path, state, {"key": key, "seed": seed, "dtype": dtype})  # one checksum over all
    zero_shot = zero_shot_accuracy(pool_cfg, path, [*names, *(n for n in corpus if n not in names)], cfg.data,
                                   cache_dir)
    return {"seed": seed, "key": key, "file": path.name, "sha256": io.sha256_file(path), "dtype": dtype,
            "bytes": path.stat().st_size, "zero_shot": zero_shot,
            "zero_shot_avg": round(sum(zero_shot[n] for n in names) / len(names), 2), "zero_shot_avg_tasks": names,
            "pretrain_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
            "final_loss": round(float(sum(losses[-20:]) / max(1, len(losses[-20:]))), 4),
            "code": _pretrain_code(), "torch": torch.__version__}


@torch.no_grad()
def zero_shot_accuracy(pool_cfg: dict[str, Any], path: Path, names: Sequence[str], data_cfg: Any,
                       cache_dir: Path) -> dict[str, float]:
    """Top-1 zero-shot accuracy (%) per task of the CLIP stored at ``path`` (as loaded back), on the test splits."""
    from devec.vision.taskpool import evaluate

    arch = plain(pool_cfg["arch"])
    model = build_clip(arch)
    found = store.load_entry(path)
    if found is None:
        raise ValueError(f"{path}: could not read back the weights just written")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in found[0].items()})
    model.eval()
    tasks = load_tasks(data_cfg, list(names), cache_dir)
    tok = tokenizer(arch)
    heads = {n: zeroshot_head(model, tok, *head_inputs(None, n, t)) for n, t in tasks.items()}
    pool = VisionPool(model, visual_state(model), {}, heads, found[1]["key"])
    scores = evaluate(pool, pool.pretrained, tasks, split="test")
    return {n: round(scores[n], 2) for n in names}


def ship(seeds: Sequence[int], out: Path = SHIPPED_DIR, overrides: Sequence[str] = (), cache_dir: Path | None = None,
         dtype: str = "float32", progress: Any = None) -> dict[str, Any]:
    """Regenerate the files of ``seeds`` in ``out`` and its manifest (other seeds' records there are kept)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old = shipped_manifest(out) or {}
    records = {int(r["seed"]): r for r in old.get("weights", []) if (out / r["file"]).is_file()}
    for seed in seeds:  # the manifest is rewritten after each seed: an interrupted run keeps what it finished
        cfg = compose_config(seed, overrides)
        record = ship_one(cfg, out, Path(cache_dir or cfg.paths.cache_dir), dtype, progress)
        record["command"] = command_line([seed], overrides, out, dtype)
        records[seed] = record
        _write_manifest(out, records, overrides, dtype)
        log.info("seed %d: key %s, zero-shot avg %.1f, pre-trained in %.0f s", seed, record["key"],
                 record["zero_shot_avg"], record["pretrain_seconds"])
    return _write_manifest(out, records, overrides, dtype)


def _write_manifest(out: Path, records: dict[int, dict[str, Any]], overrides: Sequence[str], dtype: str
                    ) -> dict[str, Any]:
    manifest = {"format": SHIPPED_FORMAT,
                "command": command_line(sorted(records), overrides, out, dtype),
                "note": "the pre-trained embedded CLIP per seed; a run uses a file when its key equals "
                        "devec.vision.pool.pretrain_key of the run's pool config (arch, pretrain, corpus tasks, "
                        "image size, seed)",
                "weights": [records[s] for s in sorted(records)]}
    io.write_json(out / SHIPPED_MANIFEST, manifest)
    return manifest


def command_line(seeds: Sequence[int], overrides: Sequence[str], out: Path, dtype: str) -> str:
    """The command that regenerates ``seeds`` with these settings."""
    parts = ["python -m devec.vision.ship_weights", "--seeds", ",".join(str(s) for s in seeds)]
    if Path(out).resolve() != SHIPPED_DIR:
        parts += ["--out", str(out)]
    if dtype != "float32":
        parts += ["--dtype", dtype]
    return " ".join([*parts, *overrides])


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None


def main(argv: Sequence[str] | None = None) -> None:
    """``devec-ship-weights --seeds 0,1,2 [--out DIR] [--dtype float32|float16] [hydra overrides]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the table1_multitask composition")
    ap.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--out", type=Path, default=SHIPPED_DIR, help=f"folder to write (default {SHIPPED_DIR})")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage dtype (default float32)")
    ap.add_argument("--cache", type=Path, default=None, help="cache folder (default: paths.cache_dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from tqdm.auto import tqdm

    manifest = ship(args.seeds, args.out, args.overrides, args.cache, args.dtype, progress=tqdm)
    for r in manifest["weights"]:
        print(f"seed {r['seed']}: {r['file']} key {r['key']} zero-shot avg {r['zero_shot_avg']:.1f} "
              f"({r['bytes'] / 1e6:.1f} MB {r['dtype']})")


if __name__ == "__main__":
    main()
