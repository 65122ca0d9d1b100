"""The task pool: top-1 accuracy of an image encoder (given as parameters) on each task, its average and normalized."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from devec.vision.data import ImageSet, Task
from devec.vision.pool import VisionPool

Params = Mapping[str, torch.Tensor]


def logits(pool: VisionPool, params: Params, task: str, x: torch.Tensor) -> torch.Tensor:
    """Zero-shot logits of images ``x`` through the encoder with ``params`` and ``task``'s frozen head."""
    head = pool.heads[task]
    return F.normalize(functional_call(pool.model.visual, dict(params), (x.to(head.device),)), dim=-1) @ head


@torch.no_grad()
def accuracy(pool: VisionPool, params: Params, task: str, data: ImageSet, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    correct = 0
    for x, y in data.batches(batch_size):
        correct += int((logits(pool, params, task, x).argmax(-1).cpu() == y).sum())
    return 100.0 * correct / max(1, len(data))


def evaluate(pool: VisionPool, params: Params | Callable[[str], Params], tasks: Mapping[str, Task],
             split: str = "test", limit: int | None = None, batch_size: int = 256) -> dict[str, float]:
    """``{task: accuracy, ..., "avg": mean}``; ``params`` may depend on the task (individual fine-tuned models)."""
    out = {}
    for name, task in tasks.items():
        p = params(name) if callable(params) else params
        out[name] = accuracy(pool, p, name, getattr(task, split).head(limit), batch_size)
    out["avg"] = sum(out.values()) / max(1, len(out))
    return out


def normalized(scores: Mapping[str, float], individual: Mapping[str, float],
               names: Sequence[str]) -> dict[str, float | None]:
    """Normalized accuracy: merged accuracy / the task's individual fine-tuned accuracy (percent); None (null in
    results.json, an empty cell in tables) where the individual model scores 0, and then for the average too."""
    out: dict[str, float | None] = {n: 100.0 * scores[n] / individual[n] if individual[n] > 0 else None
                                    for n in names}
    defined = [v for v in out.values() if v is not None]
    out["avg"] = sum(defined) / len(names) if names and len(defined) == len(names) else None
    return out
