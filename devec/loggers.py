"""Experiment loggers: Weights & Biases (offline unless told otherwise) or none."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from devec.io import columns_of


class NullLogger:
    """Logs nothing; results still land in the run directory."""

    def __init__(self, **_: Any) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        pass

    def log_image(self, name: str, path: str | Path) -> None:
        pass

    def summary(self, results: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    """Weights & Biases run; ``mode='offline'`` by default, ``logger.mode=online`` to sync."""

    def __init__(self, project: str = "devec", mode: str = "offline", entity: str | None = None,
                 name: str | None = None, group: str | None = None, tags: list[str] | None = None,
                 dir: str | Path | None = None, run_config: dict[str, Any] | None = None) -> None:
        import wandb

        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}: use offline, online or disabled")
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(project=project, entity=entity, name=name, group=group, tags=list(tags or []),
                              dir=str(dir) if dir else None, config=run_config, mode=mode,
                              reinit="create_new")

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = columns_of(rows)
        table = self._wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        self.run.log({name: table})

    def log_image(self, name: str, path: str | Path) -> None:
        self.run.log({name: self._wandb.Image(str(path))})

    def summary(self, results: dict[str, Any]) -> None:
        from devec.report.collect import flatten  # the report's keys: a summary reads like devec-report's columns

        for key, value in flatten(results).items():
            if isinstance(value, int | float | str | bool):
                self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish()

