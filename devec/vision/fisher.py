"""Fisher merging (Matena & Raffel, 2022): a Fisher-weighted average of the fine-tuned models (Table 1).

Each fine-tuned image encoder's diagonal Fisher is estimated on its own task's training split, through that task's
frozen zero-shot head; the merge is FusionBench's ``merging_with_fisher_weights`` (ref. MergeLM): per entry
``sum_i c_i (F_i + eps) theta_i / sum_i c_i (F_i + eps)``, with ``c_i`` the inverse of model i's global Fisher
norm, normalized to sum to one (``normalize``), else ``1 / k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from devec.vision.data import ImageSet

Params = dict[str, torch.Tensor]


def _logits(visual: nn.Module, params: Mapping[str, torch.Tensor], head: torch.Tensor, x: torch.Tensor
            ) -> torch.Tensor:
    return F.normalize(functional_call(visual, dict(params), (x.to(head.device),)), dim=-1) @ head


def fisher_diagonal(visual: nn.Module, params: Mapping[str, torch.Tensor], head: torch.Tensor, data: ImageSet,
                    examples: int, batch_size: int, estimator: str = "batch", seed: int = 0) -> Params:
    """The diagonal Fisher of the encoder ``params`` on about ``examples`` images of ``data`` (shuffled batches).

    ``batch``: FusionBench's estimate, the squared gradient of ``sum_n sum_y sqrt(p_ny) log p_ny`` per batch (p
    detached), summed over batches and divided by the examples. ``exact``: the definition,
    ``1/N sum_n sum_y p(y|x_n) (d log p(y|x_n))^2`` (one backward pass per example and class: small models only).
    """
    if estimator not in ("batch", "exact"):
        raise ValueError(f"estimator={estimator!r}: use batch (FusionBench's) or exact (per example and class)")
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    names = list(leaves)
    total = {k: torch.zeros_like(v) for k, v in leaves.items()}
    seen = 0
    for x, _ in data.batches(batch_size, shuffle=True, seed=seed):
        if seen >= examples:
            break
        logits = _logits(visual, leaves, head, x)
        logp = logits.log_softmax(-1)
        if estimator == "batch":
            loss = (logp.detach().exp().sqrt() * logp).sum()
            grads = torch.autograd.grad(loss, [leaves[k] for k in names])
            for k, g in zip(names, grads, strict=True):
                total[k] += g.detach() ** 2
        else:
            prob = logp.detach().exp()
            for n in range(logp.shape[0]):
                for y in range(logp.shape[1]):
                    grads = torch.autograd.grad(logp[n, y], [leaves[k] for k in names], retain_graph=True)
                    for k, g in zip(names, grads, strict=True):
                        total[k] += prob[n, y] * g.detach() ** 2
        seen += x.shape[0]
    return {k: v / max(1, seen) for k, v in total.items()}


def fisher_merge(vectors: Sequence[Mapping[str, torch.Tensor]], fishers: Sequence[Mapping[str, torch.Tensor]],
                 normalize: bool = True, minimal: float = 1e-6) -> Params:
    """The Fisher-weighted average as a task vector: ``sum_i w_i tau_i`` with the per-entry weights of the merge
    (equal to averaging the fine-tuned parameters themselves, since the weights sum to one per entry)."""
    k = len(vectors)
    scale = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if normalize:
        norms = torch.stack([torch.sqrt(sum((f[n].double() ** 2).sum() for n in vectors[0])) for f in fishers])
        inverse = 1.0 / (norms + minimal)
        scale = scale * inverse / inverse.sum()
    out = {}
    for n in vectors[0]:
        weights = torch.stack([float(scale[i]) * (fishers[i][n] + minimal) for i in range(k)])
        values = torch.stack([v[n] for v in vectors])
        out[n] = (weights * values).sum(0) / weights.sum(0)
    return out
