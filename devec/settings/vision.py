"""The checks of the vision experiments (Sec. 4.1): the ``vision`` section, pool, data, tasks and method rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from devec.settings.core import (
    ConfigError,
    _at_least,
    _near,
    _plain,
    check_decomposition,
    instantiated,
    names_in,
    one_of,
    typed,
)


@dataclass
class ArithmeticGroup:
    sources: list[str] = MISSING
    target: str = MISSING
    figure: str | None = None


@dataclass
class Arithmetic:
    groups: list[ArithmeticGroup] = MISSING
    alphas: list[float] = MISSING


@dataclass
class Ablation:
    extra: list[str] | None = None
    mode: str = "pairwise"
    unique: str = "iterative"
    granularity: str = "task"
    init: float = 0.3
    steps: int = 100
    lr: float = 1.0e-2
    batch_size: int = 32


@dataclass
class VisionSettings:
    tasks: list[str] | None = None
    unseen: list[str] | None = None
    val_limit: int | None = None
    test_limit: int | None = None
    threads: int | None = None
    arithmetic: Arithmetic | None = None
    ablation: Ablation | None = None


VISION_MODES = {"table1": "pairwise", "table2": "pairwise", "table3": "pairwise", "fig2_fig3": "joint"}
"""The decomposition mode of each vision runner (devec.vision.runner.<protocol>)."""


def _check_vision(cfg: DictConfig, protocol: str) -> None:
    from devec.vision.data import SyntheticTasks, TaskPool
    from devec.vision.pool import EmbeddedPool, PoolSpec

    vision = typed("vision", cfg.get("vision"), VisionSettings)
    mode, why = VISION_MODES[protocol], f"the runner devec.vision.runner.{protocol}"
    if protocol == "table3" and vision.ablation is not None:
        one_of("vision.ablation.mode", vision.ablation.mode, ("pairwise", "joint"))
        mode, why = vision.ablation.mode, f"vision.ablation.mode={vision.ablation.mode!r}"
    check_decomposition(cfg, mode, why)
    for key in ("val_limit", "test_limit", "threads"):
        if vision[key] is not None:
            _at_least(f"vision.{key}", vision[key], 1)
    pool = instantiated("pool", cfg.get("pool"), PoolSpec)
    data = instantiated("data", cfg.get("data"), TaskPool)
    available = data.available()
    where = "the synthetic data (devec/vision/synthetic.py)" if isinstance(data, SyntheticTasks) \
        else "data.tasks_hf (entries with a path)"
    merged = _vision_tasks(vision, protocol)
    evaluated = list(merged)
    if protocol == "table2":
        evaluated += list(vision.unseen or [])
    if protocol == "fig2_fig3":
        evaluated += [g.target for g in vision.arithmetic.groups]
    _check_protocol_names(vision, protocol, available, where)
    names_in(f"vision tasks of the {protocol} runner", evaluated, available, where)
    if protocol == "table3":
        merged += [n for n in vision.ablation.extra or [] if n not in merged]
    if not isinstance(pool, EmbeddedPool):
        lacking = [n for n in merged if n not in pool.finetuned]
        if lacking:
            raise ConfigError(f"pool.finetuned has no checkpoint for {', '.join(map(repr, lacking))}, which "
                              f"the {protocol} runner merges: add pool.finetuned.{lacking[0]}=<hub repo or path>")
    if protocol == "table3":
        one_of("vision.ablation.granularity", vision.ablation.granularity, ("task", "layer"))
        one_of("vision.ablation.unique", vision.ablation.unique, ("iterative", "projection"))
        _at_least("vision.ablation.batch_size", vision.ablation.batch_size, 1)
        _at_least("vision.ablation.steps", vision.ablation.steps, 0)
    if protocol in ("table1", "table2"):
        _check_vision_methods(cfg, baselines=protocol == "table1")


def _check_protocol_names(vision: DictConfig, protocol: str, available: list[str], where: str) -> None:
    """Table 3 and Figs. 2/3/9 name their tasks by key: each known, no target among its own sources, no repeats."""
    if protocol == "fig2_fig3":
        for i, g in enumerate(vision.arithmetic.groups):
            key = f"vision.arithmetic.groups[{i}]"
            names_in(f"{key}.sources", g.sources, available, where)
            names_in(f"{key}.target", [g.target], available, where)
            if len(set(g.sources)) != len(g.sources):
                raise ConfigError(f"{key}.sources={list(g.sources)}: a task is named twice")
            if g.target in g.sources:
                raise ConfigError(f"{key}.target={g.target!r} is also one of its sources {list(g.sources)}: the "
                                  "target must be unseen; drop it from the sources or pick another target")
    elif protocol == "table3":
        extra = list(vision.ablation.extra or [])
        names_in("vision.tasks (Table 3's targets)", vision.tasks, available, where)
        names_in("vision.ablation.extra", extra, available, where)
        both = [n for n in extra if n in vision.tasks]
        if both:
            raise ConfigError(f"vision.ablation.extra={extra}: {', '.join(map(repr, both))} is already a target "
                              "(vision.tasks); extra names only the non-target vectors kept in the pool")
        if len(set(vision.tasks)) != len(vision.tasks):
            raise ConfigError(f"vision.tasks={list(vision.tasks)}: a target is named twice")
        if len(vision.tasks) + len(extra) < 3:
            raise ConfigError(f"vision.tasks={list(vision.tasks)}, vision.ablation.extra={extra}: with a target left "
                              "out, Table 3 decomposes the remaining vectors and needs at least two of them")


def _vision_tasks(vision: DictConfig, protocol: str) -> list[str]:
    """The tasks whose fine-tuned models a protocol merges; the settings each protocol needs are set."""
    if protocol == "fig2_fig3":
        if vision.arithmetic is None:
            raise ConfigError("vision.arithmetic is required by the fig2_fig3 runner (groups and alphas)")
        if not vision.arithmetic.groups or not vision.arithmetic.alphas:
            raise ConfigError("vision.arithmetic: give at least one group and one alpha")
        for i, g in enumerate(vision.arithmetic.groups):
            if len(g.sources) < 2:
                raise ConfigError(f"vision.arithmetic.groups[{i}].sources={list(g.sources)}: a joint decomposition "
                                  "needs at least two task vectors")
        return list(dict.fromkeys(s for g in vision.arithmetic.groups for s in g.sources))
    if not vision.tasks or len(vision.tasks) < 2:
        raise ConfigError(f"vision.tasks={_plain(vision.tasks)}: the {protocol} runner merges at least two tasks")
    if protocol == "table2" and not vision.unseen:
        raise ConfigError("vision.unseen is required by the table2 runner (the held-out tasks)")
    if protocol == "table3" and vision.ablation is None:
        raise ConfigError("vision.ablation is required by the table3 runner (granularity, init, steps, lr, "
                          "batch_size)")
    return list(vision.tasks)


def _check_vision_methods(cfg: DictConfig, baselines: bool) -> None:
    """Every row builds from its ``_target_`` config; with ``baselines`` (Table 1 reads DeVec's effect from them),
    a row's ``baseline`` names another row's id."""
    from devec.vision.methods import Method
    from devec.vision.runner import method_configs

    methods = method_configs(cfg)
    if not methods:
        raise ConfigError("the experiment lists no methods: methods: {...} in conf/experiment/, or "
                          "method=vision/<name>")
    for key, node in methods.values():
        m = instantiated(key, node, Method)
        if baselines and m.baseline is not None and m.baseline not in methods:
            raise ConfigError(f"{key}.baseline={m.baseline!r}: no row has that id{_near(m.baseline, list(methods))}; "
                              f"the rows are {', '.join(methods)} (add it, or set {key}.baseline=null)")


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    f"devec.vision.runner.{p}": (lambda cfg, p=p: _check_vision(cfg, p)) for p in VISION_MODES
}
"""The checks of the vision runners, by ``cfg.runner._target_``."""


def _check_finetune(cfg: DictConfig) -> None:
    from devec.vision.finetune import check_settings

    check_settings(cfg)


CHECKS["devec.vision.finetune.finetune"] = _check_finetune
