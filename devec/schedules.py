"""Learning-rate schedules of the embedded training loops, as torch.optim.lr_scheduler objects.

Each gives, bit for bit, the learning rates of the formula the embedded models were trained with (a test compares
them), so the cached and reported numbers do not move. Where torch's own schedulers round differently
(``SequentialLR(LinearLR, CosineAnnealingLR)`` updates the rate recursively), the formula is kept inside a
scheduler instead: :func:`warmup_linear` is a ``LambdaLR`` over a named function, :class:`WarmupCosineLR` computes
``lr * (step + 1) / warmup`` in that order (a ``LambdaLR`` factor ``(step + 1) / warmup`` differs in the last bit).
"""

from __future__ import annotations

import functools

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def linear_warmup_decay(step: int, warmup: int, steps: int | None = None, floor: float = 0.0) -> float:
    """Factor of the base rate: linear warm-up over ``warmup`` steps, then linear decay to ``floor`` at ``steps``.

    ``steps=None`` keeps the rate constant after the warm-up.
    """
    up = min(1.0, (step + 1) / warmup)
    return up if steps is None else up * max(floor, 1 - step / steps)


def warmup_linear(opt: Optimizer, warmup: int, steps: int | None = None, floor: float = 0.0) -> LambdaLR:
    """``LambdaLR`` of :func:`linear_warmup_decay` (``scheduler.step()`` after each ``opt.step()``)."""
    return LambdaLR(opt, functools.partial(linear_warmup_decay, warmup=warmup, steps=steps, floor=floor))


def warmup_cosine_rate(lr: float, step: int, steps: int, warmup: int) -> float:
    """The rate at ``step``: linear warm-up to ``lr`` over ``warmup`` steps, then half a cosine (float32) to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + torch.cos(torch.tensor((step - warmup) / max(1, steps - warmup) * torch.pi)).item())


class WarmupCosineLR(LRScheduler):
    """Linear warm-up then cosine decay to 0 over ``steps`` (:func:`warmup_cosine_rate` of each group's rate)."""

    def __init__(self, opt: Optimizer, steps: int, warmup: int, last_epoch: int = -1) -> None:
        self.steps, self.warmup = int(steps), int(warmup)
        super().__init__(opt, last_epoch)

    def get_lr(self) -> list[float]:
        """The rates of the current step (``last_epoch``), one per parameter group."""
        return [warmup_cosine_rate(base, self.last_epoch, self.steps, self.warmup) for base in self.base_lrs]
