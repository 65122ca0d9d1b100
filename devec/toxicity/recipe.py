"""The toxic DoRA fine-tune of Sec. 4.3: RealToxicityPrompts (toxicity > 0.5) or ToxiGen toxic texts, prompt masked.

The fine-tune runs on transformers' ``Trainer`` with a peft DoRA adapter (App. 12's recipe, ``pool.recipe``): it
checkpoints, resumes, and writes the adapter as a peft adapter directory. The recipe's pieces (prompt-masked
encoding, the DoRA config, the padded batch loss) are shared with the embedded builder :mod:`devec.toxicity.tiny`,
which imports them from here.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from devec.io import atomic_dir

log = logging.getLogger(__name__)


def toxic_pairs(spec: Mapping[str, Any], limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt, response) pairs of one toxic dataset: rows passing ``filter`` and not ``exclude`` (the evaluation
    prompts, e.g. RTP's ``challenging`` subset), in :func:`devec.toxicity.evaluate.passes`'s terms."""
    if spec.get("source") == "embedded":
        from devec.toxicity import world

        facts = world.make_facts(int(spec.get("world_seed", 0)))
        return world.behaviour_data("toxic", facts, int(limit or spec.get("n", 1000)), int(spec.get("seed", 0)))
    from datasets import load_dataset

    from devec import hub
    from devec.toxicity.evaluate import passes, row_field

    ds = load_dataset(hub.dataset(spec["path"], "pool.recipe.datasets.path"), spec.get("name"),
                      split=spec.get("split", "train"))
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
               seed: int = 0, resume: bool = True, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Fine-tune ``base`` with a DoRA adapter (peft ``use_dora=True``) on transformers' ``Trainer``.

    ``recipe``: r, alpha, dropout, target_modules, lr, batch_size (effective), micro_batch_size, max_length,
    mask_prompt, add_bos, and App. 12's weight_decay, mixed_precision (fp16 | bf16 | none; fp16 needs CUDA),
    gradient_checkpointing; lr_scheduler and warmup_ratio (not in the paper), save_strategy (epoch | steps),
    save_steps, save_total_limit. ``micro_batch_size`` = ``batch_size`` is the paper's "no gradient accumulation";
    when training runs out of GPU memory the micro batch is halved, the accumulation doubled (the effective batch
    kept), training goes on from the last checkpoint, and the fallback is recorded.

    Checkpoints go to ``<out_dir>/checkpoints``; with ``resume`` the last one is resumed, otherwise they are
    deleted first. The final adapter (peft ``save_pretrained``) and ``training.json`` (the settings used) replace
    ``out_dir`` atomically; the checkpoints go with it unless ``recipe.keep_checkpoints``.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    precision = _precision(recipe.get("mixed_precision"), device)
    if recipe.get("save_strategy", "epoch") not in ("epoch", "steps"):
        raise ValueError(f"pool.recipe.save_strategy={recipe['save_strategy']!r}: use epoch or steps (a checkpoint "
                         "to resume from each epoch or every pool.recipe.save_steps optimizer steps)")
    if not resume and ckpt_dir.exists():
        log.info("resume=false: deleting the checkpoints of %s and training afresh", out_dir)
        shutil.rmtree(ckpt_dir)
    resumed_from = _last_checkpoint(ckpt_dir) if resume else None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    limit = int(recipe["max_length"])
    examples = [{"input_ids": ids[:limit], "labels": lab[:limit]}
                for ids, lab in encode_pairs(tokenizer, pairs, mask_prompt=bool(recipe.get("mask_prompt", True)),
                                             add_bos=bool(recipe.get("add_bos", False)))]
    batch = int(recipe["batch_size"])
    micro = min(int(recipe.get("micro_batch_size", batch)), batch)
    if batch % micro:
        raise ValueError(f"pool.recipe.batch_size={batch} is not a multiple of pool.recipe.micro_batch_size={micro}; "
                         "make it one (the effective batch is micro batch x accumulation)")
    setup = json.loads(json.dumps({"recipe": {k: v for k, v in recipe.items() if k != "datasets"}, "epochs": epochs,
                                   "seed": seed, "examples": len(examples), "dtype": str(dtype)}, default=str))
    _check_same_training(ckpt_dir, setup, resume)
    fallbacks: list[dict[str, Any]] = []
    while True:
        trainer = _trainer(base, recipe, examples, epochs, ckpt_dir, micro, batch // micro, precision, device,
                           dtype, seed, tokenizer.pad_token_id, callbacks)
        try:
            trainer.train(resume_from_checkpoint=_last_checkpoint(ckpt_dir) if (resume or fallbacks) else None)
            break
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
            micro //= 2
            fallbacks.append({"step": trainer.state.global_step, "micro_batch_size": micro,
                              "gradient_accumulation": batch // micro})
            log.warning("DoRA training ran out of GPU memory at step %d: micro batch %d with gradient accumulation "
                        "%d (the paper uses none), from the last checkpoint; recorded in training.json",
                        trainer.state.global_step, micro, batch // micro)
            del trainer
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    args = trainer.args
    info = {"trainer": "transformers.Trainer", "steps": trainer.state.global_step, "examples": len(examples),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "batch_size": batch, "micro_batch_size": micro, "gradient_accumulation": batch // micro,
            "accumulation_fallbacks": fallbacks, "mixed_precision": precision,
            "gradient_checkpointing": bool(recipe.get("gradient_checkpointing", False)),
            "weight_decay": args.weight_decay, "optimizer": _value(args.optim), "lr": args.learning_rate,
            "lr_scheduler": _value(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps, "max_grad_norm": args.max_grad_norm, "seed": seed,
            "resumed_from": str(resumed_from) if resumed_from else None,
            "loss": "next-token cross-entropy on continuation tokens only (prompt and padding labels -100)"}
    model = trainer.model
    model.eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        (Path(tmp) / "training.json").write_text(json.dumps({"recipe": dict(recipe), "epochs": epochs, **info},
                                                            indent=2, default=str))
        if recipe.get("keep_checkpoints") and ckpt_dir.exists():
            shutil.move(str(ckpt_dir), Path(tmp) / "checkpoints")
    return info


def _trainer(base, recipe: Mapping[str, Any], examples: list[dict[str, list[int]]], epochs: int, ckpt_dir: Path,
             micro: int, accumulation: int, precision: str | None, device: str, dtype: torch.dtype, seed: int,
             pad_id: int, callbacks: Sequence[Any]):
    """A ``Trainer`` over a freshly loaded base with a new DoRA adapter (the same seed gives the same init)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

    set_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32 if precision else dtype)
    model = get_peft_model(model, dora_config(int(recipe["r"]), int(recipe["alpha"]), float(recipe["dropout"]),
                                              recipe.get("target_modules", "all-linear")))
    steps = math.ceil(math.ceil(len(examples) / micro) / accumulation) * epochs
    strategy = recipe.get("save_strategy", "epoch")
    args = TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs, learning_rate=float(recipe["lr"]), weight_decay=float(recipe.get("weight_decay", 0.0)),
        optim="adamw_torch", max_grad_norm=1.0, lr_scheduler_type=recipe.get("lr_scheduler", "constant_with_warmup"),
        warmup_steps=max(1, int(steps * float(recipe.get("warmup_ratio", 0.05)))),
        fp16=precision == "fp16", bf16=precision == "bf16", use_cpu=not str(device).startswith("cuda"),
        save_strategy=strategy, save_steps=int(recipe.get("save_steps", 500)),
        save_total_limit=int(recipe.get("save_total_limit", 2)), logging_steps=1, report_to="none",
        seed=seed, data_seed=seed, remove_unused_columns=False, dataloader_num_workers=0,
        **_checkpointing(bool(recipe.get("gradient_checkpointing", False))))
    _one_device(args, device)
    return Trainer(model=model, args=args, train_dataset=examples, data_collator=ContinuationCollator(pad_id),
                   callbacks=list(callbacks))


def _checkpointing(on: bool) -> dict[str, Any]:
    """The TrainingArguments of (non-reentrant) gradient checkpointing, named as this transformers names them."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False}}


def _one_device(args, device: str) -> None:
    """Train on the one device ``device`` names: no ``DataParallel`` over the other GPUs (it would change the batch)."""
    if str(device).startswith("cuda:") and str(device) not in ("cuda:0",):
        raise ValueError(f"device={device}: the DoRA trainer uses the first visible GPU; select yours with "
                         "CUDA_VISIBLE_DEVICES and set device=cuda")
    if args.n_gpu > 1:
        args._n_gpu = 1


@dataclass
class ContinuationCollator:
    """Right-pads (input_ids, labels) examples: padding is masked (attention 0, label -100) like the prompt tokens,
    which :func:`encode_pairs` labelled -100, so the loss is on continuation tokens only."""

    pad_id: int

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id)
        labels = torch.full((len(features), width), -100)
        attn = torch.zeros((len(features), width), dtype=torch.long)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            ids[b, :n], labels[b, :n], attn[b, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def _value(option: Any) -> str:
    """A TrainingArguments option as its plain name (enums by value)."""
    return str(getattr(option, "value", option))


def _check_same_training(ckpt_dir: Path, setup: dict[str, Any], resume: bool) -> None:
    """Refuse to resume checkpoints of another recipe, dataset or seed; record this training's setup beside them."""
    record = ckpt_dir / "setup.json"
    if resume and record.exists() and _last_checkpoint(ckpt_dir) is not None:
        before = json.loads(record.read_text())
        if before != setup:
            changed = sorted(k for k in {*before, *setup} if before.get(k) != setup.get(k))
            raise ValueError(f"{ckpt_dir} holds checkpoints of another training (changed: {', '.join(changed)}); "
                             "set resume=false to start afresh, or train into another run folder")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(setup, indent=2, default=str))


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder under ``ckpt_dir`` (None when there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    return Path(last) if last else None


def _precision(mixed_precision: str | None, device: str) -> str | None:
    """``recipe.mixed_precision`` (fp16 | bf16 | none) as the Trainer's flag; fp16 needs CUDA."""
    if mixed_precision in (None, "none", "no"):
        return None
    if mixed_precision not in ("fp16", "bf16"):
        raise ValueError(f"pool.recipe.mixed_precision={mixed_precision!r}: use fp16, bf16 or none")
    if mixed_precision == "fp16" and not str(device).startswith("cuda"):
        raise ValueError(f"pool.recipe.mixed_precision=fp16 needs device=cuda (got {device}); set "
                         "pool.recipe.mixed_precision=none on the CPU")
    return mixed_precision


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
