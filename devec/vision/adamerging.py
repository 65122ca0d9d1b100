"""AdaMerging (Yang et al., 2024): merging coefficients learned by entropy minimisation on unlabeled test data.

The merged encoder is ``theta = theta_pre + sum_t lambda_{t,l} tau_{t,l}`` per parameter l, evaluated through
``torch.func.functional_call``: no copy of the model per step; the only per-step memory is the merged parameters.
With DeVec, the pairwise shared components are extra vectors with their own coefficients (Tables 1, 2).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from devec.vision.data import Task


class MergedParams(nn.Module):
    """Learnable coefficients over stacked task vectors: task-wise (K,) or layer-wise (K, L)."""

    def __init__(self, pretrained: Mapping[str, torch.Tensor], vectors: Sequence[Mapping[str, torch.Tensor]],
                 init: Sequence[float], granularity: str = "layer") -> None:
        super().__init__()
        if granularity not in ("task", "layer"):
            raise ValueError(f"method.granularity={granularity!r}: use task or layer")
        if len(init) != len(vectors):
            raise ValueError(f"{len(init)} initial coefficients for {len(vectors)} vectors")
        self.names = list(pretrained)
        self.pretrained = {n: pretrained[n].detach() for n in self.names}
        self.stacked = {n: torch.stack([v[n].detach() for v in vectors]) for n in self.names}
        device = next(iter(self.pretrained.values())).device
        start = torch.tensor(list(init), dtype=torch.float32, device=device)
        shape = (len(vectors),) if granularity == "task" else (len(vectors), len(self.names))
        self.coefficients = nn.Parameter(start.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone())
        self.granularity = granularity

    def forward(self) -> dict[str, torch.Tensor]:
        """The merged parameters (eq. of Task Arithmetic with per-layer coefficients)."""
        out = {}
        for i, n in enumerate(self.names):
            lam = self.coefficients if self.granularity == "task" else self.coefficients[:, i]
            out[n] = self.pretrained[n] + torch.tensordot(lam, self.stacked[n], dims=1)
        return out


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the predictions (AdaMerging's surrogate objective)."""
    p = logits.softmax(-1)
    return -(p * logits.log_softmax(-1)).sum(-1).mean()


def adamerge(visual: nn.Module, heads: Mapping[str, torch.Tensor], tasks: Mapping[str, Task],
             merged: MergedParams, steps: int, lr: float, batch_size: int, clamp: Sequence[float] | None,
             seed: int = 0, progress: Any = None, naive: bool = False, batches: int = 1) -> list[float]:
    """Minimise the summed entropy over tasks' unlabeled test batches; returns the loss curve.

    Each step takes ``batches`` batches of ``batch_size`` per task and sums their mean entropies, as [48]'s code
    does (two batches of 16: its loader loop breaks after ``i > 0``).
    """
    opt = torch.optim.Adam(merged.parameters(), lr=lr, betas=(0.9, 0.999))
    samplers = {n: tasks[n].test.sampler(batch_size, seed=seed + i) for i, n in enumerate(tasks)}
    losses = []
    it = progress(range(steps), desc="AdaMerging", leave=False) if progress else range(steps)
    for _ in it:
        params = merged()
        encoder = _naive_encoder(visual, params) if naive else None
        loss = 0.0
        for name in tasks:
            for _ in range(batches):
                x, _ = next(samplers[name])
                x = x.to(heads[name].device)
                feats = encoder(x) if naive else functional_call(visual, params, (x,))
                loss = loss + entropy(F.normalize(feats, dim=-1) @ heads[name])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if clamp is not None:
            with torch.no_grad():
                merged.coefficients.clamp_(float(clamp[0]), float(clamp[1]))
        losses.append(loss.item())
    return losses


def _naive_encoder(visual: nn.Module, params: Mapping[str, torch.Tensor]) -> nn.Module:
    """The reference way: a deep copy of the encoder per step with its parameters replaced by merged tensors."""
    model = copy.deepcopy(visual)
    for name, value in params.items():
        *path, leaf = name.split(".")
        mod = model
        for p in path:
            mod = getattr(mod, p)
        delattr(mod, leaf)
        setattr(mod, leaf, value)
    return model
