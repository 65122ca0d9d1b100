"""RegMean (Jin et al., 2023): per linear layer, the merge that best matches every fine-tuned layer's outputs on
its own task's inputs (Table 1).

For a linear map ``y = W x`` with each model's input Gram ``G_i = X_i^T X_i / n_i`` (its task's training images
through its own fine-tuned encoder), the merged ``W^T = (sum_i G~_i)^-1 sum_i G~_i W_i^T`` where ``G~`` keeps the
diagonal and scales the off-diagonal by ``alpha`` (FusionBench ``reduce_non_diagonal_ratio``, 0.6). Parameters
that are not the weight of a hooked linear map (biases, LayerNorms, conv1, ``proj``) are averaged, as FusionBench
does. In open_clip's layout the hooked maps are each block's fused ``attn.in_proj_weight`` (q, k, v share one input,
so the fused solve equals three separate ones), ``attn.out_proj.weight`` (its input is recomputed from the
attention's own weights), ``mlp.c_fc.weight`` and ``mlp.c_proj.weight``: the layers FusionBench merges by RegMean
in the HF layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from devec.vision.data import ImageSet

Params = dict[str, torch.Tensor]


def attention_values(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """The input of ``mha.out_proj`` for self-attention on ``x`` (no mask): the heads' outputs, concatenated."""
    if not mha.batch_first:
        x = x.transpose(0, 1)
    n, length, width = x.shape
    heads = mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, width)
    return out if mha.batch_first else out.transpose(0, 1)


class _Grams:
    """Forward hooks that accumulate each hooked weight's input Gram (running mean over tokens)."""

    def __init__(self, visual: nn.Module) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.rows: dict[str, int] = {}
        self.handles = []
        for name, mod in visual.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(mod, nn.MultiheadAttention):
                self.handles.append(mod.register_forward_hook(self._attention(prefix), with_kwargs=True))
            elif isinstance(mod, nn.Linear) and not name.endswith("attn.out_proj"):
                self.handles.append(mod.register_forward_hook(self._linear(f"{prefix}weight")))

    def add(self, key: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        self.sums[key] = self.sums.get(key, 0) + x.T @ x
        self.rows[key] = self.rows.get(key, 0) + x.shape[0]

    def _linear(self, key: str) -> Any:
        return lambda mod, args, out: self.add(key, args[0])

    def _attention(self, prefix: str) -> Any:
        def hook(mod: nn.MultiheadAttention, args: tuple, kwargs: dict, out: Any) -> None:
            query = args[0] if args else kwargs["query"]
            key = args[1] if len(args) > 1 else kwargs.get("key")
            if kwargs.get("attn_mask") is not None or (key is not None and key is not query):
                raise ValueError(f"RegMean: {prefix}attn is not unmasked self-attention; its out_proj input "
                                 "cannot be recomputed")
            self.add(f"{prefix}in_proj_weight", query)
            self.add(f"{prefix}out_proj.weight", attention_values(mod, query))
        return hook

    def result(self) -> Params:
        for h in self.handles:
            h.remove()
        return {k: (s / self.rows[k]).float() for k, s in self.sums.items()}


@torch.no_grad()
def gram_matrices(visual: nn.Module, params: Mapping[str, torch.Tensor], data: ImageSet, examples: int,
                  batch_size: int, seed: int = 0) -> Params:
    """Each hooked weight's input Gram ``X^T X / rows`` for the encoder ``params`` on about ``examples`` images."""
    grams = _Grams(visual)
    seen = 0
    try:
        for x, _ in data.batches(batch_size, shuffle=True, seed=seed):
            if seen >= examples:
                break
            functional_call(visual, dict(params), (x.to(next(iter(params.values())).device),))
            seen += x.shape[0]
    finally:
        out = grams.result()
    return out


def reduce_off_diagonal(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha`` times the off-diagonal, the diagonal kept (RegMean's regularization)."""
    scale = torch.full_like(gram, float(alpha))
    scale.fill_diagonal_(1.0)
    return gram * scale


def regmean_merge(finetuned: Sequence[Mapping[str, torch.Tensor]], grams: Sequence[Mapping[str, torch.Tensor]],
                  alpha: float) -> Params:
    """The merged parameters: RegMean's closed form for every weight with a Gram in all models, else the mean."""
    out = {}
    for n in finetuned[0]:
        if all(n in g for g in grams):
            reduced = [reduce_off_diagonal(g[n].double(), alpha) for g in grams]
            rhs = sum(g @ w[n].double().T for g, w in zip(reduced, finetuned, strict=True))
            out[n] = torch.linalg.solve(sum(reduced), rhs).T.to(finetuned[0][n].dtype).contiguous()
        else:
            out[n] = torch.stack([w[n] for w in finetuned]).mean(0)
    return out
