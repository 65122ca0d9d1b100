"""The ``devec`` command: compose a config with Hydra, run the experiment's runner, save and log results."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from devec import io
from devec.runtime import Run, seed_everything
from devec.settings import describe, validate


def config_dir() -> str:
    """conf/: the repository's (a source checkout or editable install), else the copy the wheel ships as devec.conf."""
    package = Path(__file__).resolve().parent
    repo = package.parent / "conf"
    return str(repo if (repo / "config.yaml").is_file() else package / "conf")


CONFIG_DIR = config_dir()

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, ImportError, OmegaConfBaseException)
"""Mistakes in settings, paths, permissions or installed packages: one line on stderr, not a traceback
(devec.settings.ConfigError is a ValueError). DEVEC_TRACEBACK=1 shows the traceback."""


def execute(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run the experiment's runner (``runner: {_target_: <function>, _partial_: true}``) in ``out_dir``: resolved
    config, results.json and the runner's tables and plots.

    Every setting is checked first (:func:`devec.settings.validate`), before the runner builds or downloads anything.
    """
    validate(cfg)
    seed_everything(int(cfg.seed))
    runner = instantiate(cfg.runner)
    out_dir.mkdir(parents=True, exist_ok=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    io.write_text(out_dir / "config.yaml", OmegaConf.to_yaml(container))
    logger = instantiate(cfg.logger, _partial_=True)(dir=str(out_dir), run_config=container)
    run = Run(out_dir=out_dir, cache_dir=Path(cfg.paths.cache_dir), logger=logger, seed=int(cfg.seed))
    start = time.perf_counter()
    try:
        results = runner(cfg, run) or {}
        results = {"experiment": cfg.name, "seed": int(cfg.seed), **results,
                   "seconds": round(time.perf_counter() - start, 3)}
        run.save_json("results.json", results)
        logger.summary(results)
    finally:
        logger.finish()
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        execute(cfg, out_dir)
    except USER_ERRORS as err:
        if os.environ.get("DEVEC_TRACEBACK"):
            raise
        print(f"devec: error: {error_line(err)}\n(DEVEC_TRACEBACK=1 shows where)", file=sys.stderr)
        sys.exit(2)
    print(f"results: {out_dir / 'results.json'}")


def error_line(err: BaseException) -> str:
    """One line for a user's mistake, with what to change where the error type alone says it."""
    if isinstance(err, OmegaConfBaseException):
        return describe(err)
    line = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, PermissionError):
        return (f"{line}: not writable; run with decomposition.cache=false to skip the cache, or point "
                f"DEVEC_CACHE=<writable dir> (DEVEC_OUTPUTS for run outputs) elsewhere")
    if isinstance(err, ModuleNotFoundError):
        return f"{line} (a package this run needs is not installed: pip install it, or pick another setting)"
    return line


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
