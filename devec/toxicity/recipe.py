"""The toxic DoRA fine-tune of Sec. 4.3: RealToxicityPrompts (toxicity > 0.5) or ToxiGen toxic texts, prompt masked.

The recipe's pieces (prompt-masked encoding, the DoRA config, the padded batch loss) are shared with the embedded
builder :mod:`devec.toxicity.tiny`, which imports them from here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from devec.io import atomic_dir
from devec.schedules import warmup_linear


def toxic_pairs(spec: Mapping[str, Any], limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt, response) pairs of one toxic dataset: rows whose ``filter`` fields exceed their thresholds."""
    if spec.get("source") == "embedded":
        from devec.toxicity import world

        facts = world.make_facts(int(spec.get("world_seed", 0)))
        return world.behaviour_data("toxic", facts, int(limit or spec.get("n", 1000)), int(spec.get("seed", 0)))
    from datasets import load_dataset

    from devec.toxicity.evaluate import row_field

    ds = load_dataset(spec["path"], spec.get("name"), split=spec.get("split", "train"))
    pairs = []
    filters = dict(spec.get("filter") or {})
    for row in ds:
        passes = ((v := row_field(row, k)) is not None and float(v) > float(t) for k, t in filters.items())
        if not all(passes):
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
    mask_prompt. The paper: r=256, alpha=512, dropout 0.02, all linear layers, lr 2e-4, batch 256.
    """
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    model = get_peft_model(model, dora_config(int(recipe["r"]), int(recipe["alpha"]), float(recipe["dropout"]),
                                              recipe.get("target_modules", "all-linear")))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = [(ids[: int(recipe["max_length"])], lab[: int(recipe["max_length"])])
                for ids, lab in encode_pairs(tokenizer, pairs, mask_prompt=bool(recipe.get("mask_prompt", True)))]
    micro = int(recipe["micro_batch_size"])
    accum = max(1, int(recipe["batch_size"]) // micro)
    steps = max(1, math.ceil(len(examples) * epochs / (micro * accum)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(recipe["lr"]), weight_decay=0.0)
    sched = warmup_linear(opt, warmup=max(1, steps // 20))
    order = [i for _ in range(epochs) for i in random.Random(seed).sample(range(len(examples)), len(examples))]
    model.train()
    losses = []
    it: Iterable = range(steps)
    if progress is not None:
        it = progress(it, "DoRA fine-tune (toxic)")
    for step in it:
        opt.zero_grad(set_to_none=True)
        chunk = order[step * micro * accum: (step + 1) * micro * accum]
        total = 0.0
        for j in range(0, len(chunk), micro):
            batch = [examples[i] for i in chunk[j: j + micro]]
            loss = batch_loss(model, batch, tokenizer.pad_token_id, device) * len(batch) / len(chunk)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(total)
    model.eval()
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
    return {"steps": steps, "examples": len(examples), "first_loss": losses[0], "last_loss": losses[-1]}


def encode_pairs(tok, pairs: Sequence[tuple[str, str]], mask_prompt: bool) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels of (prompt, response) pairs; prompt tokens get label -100 when ``mask_prompt``."""
    out = []
    for prompt, response in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = p + r
        labels = ([-100] * len(p) if mask_prompt else list(p)) + r
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
