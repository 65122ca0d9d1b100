"""Training the embedded models: contrastive CLIP pre-training, then fine-tuning the image encoder per task.

Fine-tuning follows the paper's source of task vectors (Ilharco et al.): the image encoder is trained with
cross-entropy through a frozen zero-shot head; the task vector is ``theta_ft - theta_pre`` of ``model.visual``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devec.schedules import WarmupCosineLR
from devec.vision.clip import normalize_images
from devec.vision.data import ImageSet


def pretrain_clip(model: nn.Module, images: torch.Tensor, captions: Sequence[str], tokenize: Any, steps: int,
                  batch_size: int, lr: float, seed: int = 0, progress: Any = None,
                  lock_token_embedding: bool = True) -> list[float]:
    """CLIP's symmetric contrastive loss on (image, caption) pairs; returns the loss curve.

    ``lock_token_embedding`` keeps the (49408 x width) BPE token table at its random init: our captions use a
    few hundred tokens, and updating the whole table would dominate the step time on a CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = tokenize(list(captions))
    if lock_token_embedding:
        model.token_embedding.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    sched = WarmupCosineLR(opt, steps, warmup=max(1, steps // 20))
    model.train()
    losses = []
    it = progress(range(steps), desc="pre-train CLIP") if progress else range(steps)
    for step in it:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        img = F.normalize(model.encode_image(normalize_images(images[idx])), dim=-1)
        txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        # captions repeat (few templates x classes): identical captions in a batch are all positives
        same = (tokens[idx][:, None, :] == tokens[idx][None, :, :]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                      + torch.sum(-target * logits.t().log_softmax(1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        losses.append(loss.item())
        if progress and step % 20 == 0:
            it.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # shown at the next throttled redraw
    model.eval()
    return losses


def finetune_visual(model: nn.Module, head: torch.Tensor, train: ImageSet, steps: int, batch_size: int, lr: float,
                    seed: int = 0, progress: Any = None, desc: str = "fine-tune") -> dict[str, torch.Tensor]:
    """Fine-tune ``model.visual`` with cross-entropy through the frozen zero-shot ``head``; returns its weights."""
    visual = model.visual
    visual.train()
    opt = torch.optim.AdamW(visual.parameters(), lr=lr, weight_decay=0.1)
    sched = WarmupCosineLR(opt, steps, warmup=max(1, steps // 10))
    batches = train.sampler(batch_size, seed=seed)
    it = progress(range(steps), desc=desc, leave=False) if progress else range(steps)
    for _ in it:
        x, y = next(batches)
        logits = F.normalize(visual(x), dim=-1) @ head
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(visual.parameters(), 1.0)
        opt.step()
        sched.step()
    visual.eval()
    return {k: v.detach().clone() for k, v in visual.named_parameters()}


def fit_coefficients(visual: nn.Module, head: torch.Tensor, train: ImageSet, merged: nn.Module, steps: int,
                     lr: float, batch_size: int, seed: int = 0) -> list[float]:
    """Fit merging coefficients with cross-entropy on a target's labelled train split (Table 3)."""
    return fit_multitask(visual, {"target": head}, {"target": train}, merged, steps, lr, batch_size, seed=seed)


def fit_multitask(visual: nn.Module, heads: Mapping[str, torch.Tensor], splits: Mapping[str, ImageSet],
                  merged: nn.Module, steps: int, lr: float, batch_size: int, seed: int = 0, progress: Any = None
                  ) -> list[float]:
    """Fit merging coefficients (``merged``'s only parameters) with the summed cross-entropy of one labelled batch
    per task and step through each task's frozen head (Task Arithmetic + DeVec, Sec. 4.1); returns the loss curve."""
    from torch.func import functional_call

    opt = torch.optim.Adam(merged.parameters(), lr=lr)
    batches = {n: splits[n].sampler(batch_size, seed=seed + i) for i, n in enumerate(splits)}
    losses = []
    it = progress(range(steps), desc="coefficients (cross-entropy)", leave=False) if progress else range(steps)
    for _ in it:
        params = merged()
        loss = 0.0
        for name, head in heads.items():
            x, y = next(batches[name])
            logits = F.normalize(functional_call(visual, params, (x.to(head.device),)), dim=-1) @ head
            loss = loss + F.cross_entropy(logits, y.to(head.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
