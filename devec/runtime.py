"""What a runner gets: its output directory, cache, logger, seed and atomic writers for results."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from devec import io, store
from devec.loggers import NullLogger


def plain(value: Any) -> Any:
    """A config node as plain dicts and lists (interpolations resolved); anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def built(node: Any, kind: type | None, key: str, example: str) -> Any:
    """The object the ``_target_`` config at ``key`` names (``node`` itself when it is already a ``kind``);
    a ValueError that names ``key`` and an ``example`` target when ``node`` names none."""
    if kind is not None and isinstance(node, kind):
        return node
    if not isinstance(node, Mapping) or "_target_" not in node:
        shown = plain(node)
        raise ValueError(f"{key}={shown!r}: expected a config with _target_ naming its class, e.g. {example}")
    from hydra.utils import instantiate

    return instantiate(node, _convert_="all")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same config gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Run:
    """One run's output directory and logger; every file is written atomically."""

    out_dir: Path
    cache_dir: Path
    logger: Any = field(default_factory=NullLogger)
    seed: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.cache_dir = Path(self.cache_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        store.check_cache_dir(self.cache_dir)  # fails now, with a hint, if it cannot be created; warns if read-only

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.logger.log(dict(metrics), step=step)

    def save_json(self, name: str, obj: Any) -> Path:
        return io.write_json(self.path(name), obj)

    def save_table(self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   title: str | None = None, floatfmt: str = ".2f") -> Path:
        """Write ``name.md`` and ``name.csv`` and log the table; returns the markdown path."""
        rows = [dict(r) for r in rows]
        columns = list(columns or io.columns_of(rows))
        io.write_csv(self.path(f"{name}.csv"), rows, columns)
        md = markdown_table(rows, columns, floatfmt=floatfmt)
        path = io.write_text(self.path(f"{name}.md"), (f"### {title}\n\n" if title else "") + md)
        self.logger.log_table(name, rows)
        return path

    def save_figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib figure as ``name.png`` and log it as an image."""
        import matplotlib.pyplot as plt

        path = self.path(f"{name}.png")
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
        plt.close(fig)
        self.logger.log_image(name, path)
        return path

    def progress(self, iterable: Iterable, desc: str, total: int | None = None, **kw: Any) -> Iterable:
        """A progress bar; redrawn at most every 30 s when stderr is a log file rather than a terminal."""
        kw.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
        return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, **kw)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], floatfmt: str = ".2f") -> str:
    """A GitHub markdown table; floats formatted with ``floatfmt``."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
