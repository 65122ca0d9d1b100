"""The toxic DoRA fine-tune of Sec. 4.3: RealToxicityPrompts (toxicity > 0.5) or ToxiGen toxic texts, prompt masked.

The recipe's pieces (prompt-masked encoding, the DoRA config, the padded batch loss) are shared with the embedded
builder :mod:`devec.toxicity.tiny`, which imports them from here.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from devec.io import atomic_dir
from devec.schedules import warmup_linear

log = logging.getLogger(__name__)


def toxic_pairs(spec: Mapping[str, Any], limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt, response) pairs of one toxic dataset: rows passing ``filter`` and not ``exclude`` (the evaluation
    prompts, e.g. RTP's ``challenging`` subset), in :func:`devec.toxicity.evaluate.passes`'s terms."""
    if spec.get("source") == "embedded":
        from devec.toxicity import world

        facts = world.make_facts(int(spec.get("world_seed", 0)))
        return world.behaviour_data("toxic", facts, int(limit or spec.get("n", 1000)), int(spec.get("seed", 0)))
    from datasets import load_dataset

    from devec.toxicity.evaluate import passes, row_field

    ds = load_dataset(spec["path"], spec.get("name"), split=spec.get("split", "train"))
    pairs = []
    filters, exclude = dict(spec.get("filter") or {}), dict(spec.get("exclude") or {})
    for row in ds:
        if not passes(row, filters) or (exclude and passes(row, exclude)):
            continue
        prompt = row_field(row, spec["prompt_field"]) if spec.get("prompt_field") else ""
        response = row_field(row, spec["response_field"])
        if isinstance(response, str) and response.strip():
            pairs.append((prompt or "", response))
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise ValueError(f"no rows of {spec['path']} pass the filter {spec.get('filter')}; check pool.recipe.datasets")
    return pairs


def train_dora(base: str | Path, tokenizer, pairs: Sequence[tuple[str, str]], recipe: Mapping[str, Any],
               epochs: int, out_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
               seed: int = 0, progress: Callable[[Iterable, str], Iterable] | None = None) -> dict[str, Any]:
    """Fine-tune ``base`` with a DoRA adapter (peft ``use_dora=True``) and save the adapter to ``out_dir``.

    ``recipe``: r, alpha, dropout, target_modules, lr, batch_size (effective), micro_batch_size, max_length,
    mask_prompt, and App. 12's weight_decay, mixed_precision (fp16: fp32 master weights, autocast and a gradient
    scaler; CUDA only), gradient_checkpointing, add_bos. ``micro_batch_size`` = ``batch_size`` is the paper's "no
    gradient accumulation"; when a step runs out of GPU memory the micro batch is halved and the fallback recorded
    (returned and written to ``<out_dir>/training.json``).
    """
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    amp = _amp(recipe.get("mixed_precision"), device)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32 if amp else dtype).to(device)
    if recipe.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, dora_config(int(recipe["r"]), int(recipe["alpha"]), float(recipe["dropout"]),
                                              recipe.get("target_modules", "all-linear")))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = [(ids[: int(recipe["max_length"])], lab[: int(recipe["max_length"])])
                for ids, lab in encode_pairs(tokenizer, pairs, mask_prompt=bool(recipe.get("mask_prompt", True)),
                                             add_bos=bool(recipe.get("add_bos", False)))]
    batch = int(recipe["batch_size"])
    micro = min(int(recipe["micro_batch_size"]), batch)
    steps = max(1, math.ceil(len(examples) * epochs / batch))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(recipe["lr"]), weight_decay=float(recipe.get("weight_decay", 0.0)))
    sched = warmup_linear(opt, warmup=max(1, steps // 20))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    order = [i for _ in range(epochs) for i in random.Random(seed).sample(range(len(examples)), len(examples))]
    model.train()
    losses, fallbacks = [], []
    it: Iterable = range(steps)
    if progress is not None:
        it = progress(it, "DoRA fine-tune (toxic)")
    for step in it:
        chunk = [examples[i] for i in order[step * batch: (step + 1) * batch]]
        while True:
            try:
                losses.append(_step(model, opt, scaler, params, chunk, micro, tokenizer.pad_token_id, device, amp))
                break
            except torch.OutOfMemoryError:
                if micro == 1:
                    raise
                micro //= 2
                fallbacks.append({"step": step, "micro_batch_size": micro,
                                  "gradient_accumulation": math.ceil(batch / micro)})
                log.warning("DoRA step %d ran out of GPU memory: micro batch %d with gradient accumulation (the paper "
                            "uses none); recorded in training.json", step, micro)
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
        sched.step()
    model.eval()
    info = {"steps": steps, "examples": len(examples), "first_loss": losses[0], "last_loss": losses[-1],
            "batch_size": batch, "micro_batch_size": micro, "gradient_accumulation": math.ceil(batch / micro),
            "accumulation_fallbacks": fallbacks, "mixed_precision": str(amp).removeprefix("torch.") if amp else None,
            "gradient_checkpointing": bool(recipe.get("gradient_checkpointing")),
            "weight_decay": float(recipe.get("weight_decay", 0.0))}
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        (Path(tmp) / "training.json").write_text(json.dumps({"recipe": dict(recipe), "epochs": epochs, **info},
                                                            indent=2, default=str))
    return info


def _amp(mixed_precision: str | None, device: str) -> torch.dtype | None:
    """The autocast dtype of ``recipe.mixed_precision`` (fp16 | bf16 | none); fp16 needs CUDA."""
    if mixed_precision in (None, "none", "no"):
        return None
    if mixed_precision not in ("fp16", "bf16"):
        raise ValueError(f"pool.recipe.mixed_precision={mixed_precision!r}: use fp16, bf16 or none")
    if mixed_precision == "fp16" and not str(device).startswith("cuda"):
        raise ValueError(f"pool.recipe.mixed_precision=fp16 needs device=cuda (got {device}); set "
                         "pool.recipe.mixed_precision=none on the CPU")
    return torch.float16 if mixed_precision == "fp16" else torch.bfloat16


def _step(model, opt, scaler, params, chunk, micro: int, pad_id: int, device: str, amp: torch.dtype | None) -> float:
    """One optimizer step over ``chunk`` in micro batches (accumulated); returns the chunk's mean loss."""
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for j in range(0, len(chunk), micro):
        part = chunk[j: j + micro]
        with torch.autocast(str(device).split(":")[0], dtype=amp, enabled=amp is not None):
            loss = batch_loss(model, part, pad_id, device) * len(part) / len(chunk)
        (scaler.scale(loss) if scaler else loss).backward()
        total += float(loss.detach())
    if scaler:
        scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return total


def encode_pairs(tok, pairs: Sequence[tuple[str, str]], mask_prompt: bool, add_bos: bool = False
                 ) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels of (prompt, response) pairs; prompt tokens get label -100 when ``mask_prompt``;
    ``add_bos`` starts each with the tokenizer's BOS token (as LLaMA fine-tunes do; never scored)."""
    out = []
    for prompt, response in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        if add_bos and tok.bos_token_id is not None:
            p = [tok.bos_token_id] + p
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = p + r
        labels = ([-100] * len(p) if mask_prompt else list(p)) + r
        if add_bos and not mask_prompt and tok.bos_token_id is not None:
            labels[0] = -100
        out.append((ids, labels))
    return out


def dora_config(r: int, alpha: int, dropout: float, target_modules: Any = "all-linear"):
    """The DoRA adapter config of the paper's toxic fine-tune (peft ``LoraConfig(use_dora=True)``)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, use_dora=True,
                      task_type="CAUSAL_LM", bias="none")


def batch_loss(model, batch: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str = "cpu"
               ) -> torch.Tensor:
    """Next-token loss of (ids, labels) pairs, right-padded with ``pad_id`` (padding is masked and not scored)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for b, (x, y) in enumerate(batch):
        ids[b, : len(x)], labels[b, : len(y)], attn[b, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels.to(device)).loss
