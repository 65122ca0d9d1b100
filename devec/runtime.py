"""What a runner gets: its output directory, cache, logger, seed and atomic writers for results."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import resource
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from devec import io, store
from devec.loggers import NullLogger

log = logging.getLogger(__name__)


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
    stages: list[dict[str, Any]] = field(default_factory=list)
    _open: list[_Meter] = field(default_factory=list, init=False, repr=False)

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

    @contextlib.contextmanager
    def stage(self, name: str, detail: str | None = None) -> Iterator[None]:
        """Time one stage (load, task_vectors, decomposition, merging, training, evaluation...): wall seconds, peak
        resident memory and, on CUDA, peak allocated GPU memory, each measured from the stage's start; one log line,
        a row of ``self.stages`` (results.json ``stages``) and W&B metrics ``stage/<name>/...``."""
        if self._open:  # the enclosing stage keeps its peak so far; this one starts its own
            self._open[-1].absorb({"peak_rss_mib": _peak_rss_mib(), "cuda_peak_mib": _cuda_peak_mib()})
        meter = _Meter(name, detail, time.perf_counter(), _reset_peaks())
        self._open.append(meter)
        failed = None
        try:
            yield
        except BaseException as err:
            failed = type(err).__name__
            raise
        finally:
            self._open.pop()
            row = meter.finish()
            if failed:
                row["failed"] = failed
            if self._open:  # an enclosing stage's peak covers this one's
                self._open[-1].absorb(row)
            self.stages.append(row)
            log.info("stage %s: %s", row["stage"] + (f" ({detail})" if detail else ""), stage_line(row))
            self.logger.log({f"stage/{name}/{k}": v for k, v in row.items()
                             if k in ("seconds", "peak_rss_mib", "cuda_peak_mib") and v is not None})

    @contextlib.contextmanager
    def active(self) -> Iterator[Run]:
        """Make this the run that :func:`stage` records into (``devec.cli.execute`` does, around the runner)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def progress(self, iterable: Iterable, desc: str, total: int | None = None, **kw: Any) -> Iterable:
        """A progress bar; redrawn at most every 30 s when stderr is a log file rather than a terminal."""
        kw.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
        return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, **kw)


_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar("devec_run", default=None)


@contextlib.contextmanager
def stage(name: str, detail: str | None = None) -> Iterator[None]:
    """:meth:`Run.stage` of the active run (:meth:`Run.active`); outside a run, nothing is recorded."""
    run = _CURRENT.get()
    if run is None:
        yield
        return
    with run.stage(name, detail):
        yield


def stage_line(row: Mapping[str, Any]) -> str:
    """``12.3 s, peak RSS 812 MiB, CUDA peak 5120 MiB`` for one row of ``Run.stages``."""
    parts = [f"{row['seconds']:.1f} s"]
    if row.get("peak_rss_mib") is not None:
        parts.append(f"peak RSS {row['peak_rss_mib']:.0f} MiB" + ("" if row.get("rss_from_stage_start", True)
                                                                   else " (process peak)"))
    if row.get("cuda_peak_mib") is not None:
        parts.append(f"CUDA peak {row['cuda_peak_mib']:.0f} MiB")
    return ", ".join(parts)


MIB = 2 ** 20
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


@dataclass
class _Meter:
    """One open stage: its start, whether its RSS peak was reset at the start, and peaks of stages inside it."""

    name: str
    detail: str | None
    start: float
    reset: bool
    inner_rss: float = 0.0
    inner_cuda: float = 0.0

    def finish(self) -> dict[str, Any]:
        rss = _peak_rss_mib()
        cuda = _cuda_peak_mib()
        row: dict[str, Any] = {"stage": self.name}
        if self.detail:
            row["detail"] = self.detail
        row.update(seconds=round(time.perf_counter() - self.start, 3),
                   peak_rss_mib=None if rss is None else round(max(rss, self.inner_rss), 1),
                   cuda_peak_mib=None if cuda is None else round(max(cuda, self.inner_cuda), 1))
        if not self.reset:
            row["rss_from_stage_start"] = False  # the process's peak so far (no per-stage reset on this system)
        return row

    def absorb(self, inner: Mapping[str, Any]) -> None:
        self.inner_rss = max(self.inner_rss, inner.get("peak_rss_mib") or 0.0)
        self.inner_cuda = max(self.inner_cuda, inner.get("cuda_peak_mib") or 0.0)


def _reset_peaks() -> bool:
    """Start new peaks: Linux's VmHWM (``/proc/self/clear_refs``) and torch's CUDA peak; False when RSS cannot."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    try:
        CLEAR_REFS.write_text("5")
        return _vm_hwm_mib() is not None
    except OSError:
        return False


def _peak_rss_mib() -> float | None:
    """Peak resident memory since the last reset (VmHWM), else the process's peak (getrusage)."""
    hwm = _vm_hwm_mib()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (MIB if sys.platform == "darwin" else 1024)


def _vm_hwm_mib() -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cuda_peak_mib() -> float | None:
    """Peak allocated CUDA memory since the last reset; None when this process has not used CUDA."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / MIB


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], floatfmt: str = ".2f") -> str:
    """A GitHub markdown table; floats formatted with ``floatfmt``."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
