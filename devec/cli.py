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
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from devec import hub, io, plan
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
    A paper-scale run (or ``plan_only=true``) prints its plan (:mod:`devec.plan`) first; ``plan_only`` stops there.
    results.json holds the runner's results and ``stages``: seconds and peak memory of each stage it went through.
    """
    if cfg.get("plan_only", False):
        return plan_only(cfg, out_dir)
    validate(cfg)
    hub.set_mirror(OmegaConf.select(cfg, "paths.hub_mirror"))
    _decomposition_device(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plan.wanted(cfg):
        the_plan = plan.make(cfg)
        print(plan.render(the_plan), flush=True)
        io.write_json(out_dir / "plan.json", the_plan.to_dict())
    seed_everything(int(cfg.seed))
    runner = instantiate(cfg.runner)
    container = OmegaConf.to_container(cfg, resolve=True)
    io.write_text(out_dir / "config.yaml", OmegaConf.to_yaml(container))
    logger = instantiate(cfg.logger, _partial_=True)(dir=str(out_dir), run_config=container)
    run = Run(out_dir=out_dir, cache_dir=Path(cfg.paths.cache_dir), logger=logger, seed=int(cfg.seed))
    start = time.perf_counter()
    try:
        with run.active():
            results = runner(cfg, run) or {}
        results = {"experiment": cfg.name, "seed": int(cfg.seed), **results,
                   "seconds": round(time.perf_counter() - start, 3), "stages": run.stages}
        run.save_json("results.json", results)
        logger.summary(results)
    except BaseException:
        if run.stages:  # what was measured up to the failure (an out-of-memory stage names itself)
            run.save_json("stages.json", run.stages)
        raise
    finally:
        logger.finish()
    return results


def plan_only(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """``plan_only=true``: print the plan and write plan.json, run nothing. A setting the run would refuse (a GPU or
    a package this machine lacks, a checkpoint not set yet) is a note of the plan, not an error."""
    from devec.settings import ConfigError

    try:
        validate(cfg)
        problem = None
    except ConfigError as err:
        problem = " ".join(str(err).split())
    hub.set_mirror(OmegaConf.select(cfg, "paths.hub_mirror"))
    _decomposition_device(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    the_plan = plan.make(cfg)
    if problem:
        the_plan.notes.append(f"on this machine the run would stop before any work: {problem}")
    print(plan.render(the_plan), flush=True)
    io.write_json(out_dir / "plan.json", the_plan.to_dict())
    return {"experiment": cfg.name, "plan": the_plan.to_dict()}


def _decomposition_device(cfg: DictConfig) -> None:
    """``decomposition.device: null`` becomes the run's ``device``, so every runner passes one setting on."""
    block = cfg.get("decomposition")
    if isinstance(block, DictConfig) and block.get("device") is None:
        with open_dict(cfg):
            block.device = str(cfg.get("device", "cpu"))


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
    print(f"{'plan' if cfg.get('plan_only', False) else 'results'}: "
          f"{out_dir / ('plan.json' if cfg.get('plan_only', False) else 'results.json')}")


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
