"""The embedded LLaMA pool: a word-level tokenizer, a tiny LLaMA pre-trained on the generated world and its fine-tunes.

Every artefact is a real Hugging Face directory (safetensors, sharded) or a real peft DoRA adapter, so the embedded
run loads them through exactly the code paths used for ``meta-llama/Llama-2-7b-hf`` and its pool. This module is
the embedded builder only: the DoRA recipe it shares with paper scale lives in :mod:`devec.toxicity.recipe`, and no
paper-scale module imports this one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from devec import store
from devec.schedules import warmup_linear
from devec.toxicity import world
from devec.toxicity.recipe import batch_loss, dora_config, encode_pairs

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
# a change to any of these modules rebuilds the embedded pool
POOL_CODE = ("devec.toxicity.tiny", "devec.toxicity.world", "devec.toxicity.recipe", "devec.schedules")


def build_tokenizer(words: Sequence[str]):
    """A word-level fast tokenizer over ``words`` (whitespace split), wrapped as ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(list(SPECIALS) + [w for w in dict.fromkeys(words) if w not in SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="left", model_max_length=256)


def tiny_llama(vocab_size: int, hidden_size: int, layers: int, heads: int, intermediate_size: int, seed: int,
               max_positions: int = 128):
    """A LLaMA of the Llama-2 family, built from a transformers config (random init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2, pad_token_id=3)
    return LlamaForCausalLM(cfg)


def train_lm(model, examples: Sequence[tuple[list[int], list[int]]], steps: int, batch_size: int, lr: float,
             seed: int, pad_id: int, weight_decay: float = 0.0,
             progress: Callable[[Iterator, str], Iterator] | None = None, desc: str = "train") -> list[float]:
    """Next-token training with AdamW and a linear decay (labels -100 are not scored); returns the losses."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = warmup_linear(opt, warmup=20, steps=steps, floor=0.05)
    model.train()
    losses = []
    it: Any = range(steps)
    if progress is not None:
        it = progress(it, desc)
    for _ in it:
        batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        loss = batch_loss(model, batch, pad_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_embedded_pool(spec: Mapping[str, Any], cache_dir: Path, progress=None) -> dict[str, Any]:
    """Build (or reuse from ``cache_dir``) the tokenizer, the pre-trained tiny LLaMA and every fine-tune of ``spec``.

    Returns ``{"root", "tokenizer", "base", "members": {name: {"path", "kind"}}}``; ``kind`` is ``full``
    (a sharded HF checkpoint) or ``dora`` (a peft adapter directory). Every directory is keyed by ``spec`` and
    the code that builds it, and verified file by file against its manifest (:func:`devec.store.built_dir`).
    """
    key = store.config_key({**spec, "world": world.WORLD_VERSION, "code": store.code_version(*POOL_CODE)})
    root = Path(cache_dir) / "toxicity" / f"embedded-{key}"
    facts = world.make_facts(int(spec["world_seed"]))
    shard = str(spec.get("max_shard_size", "200KB"))
    tok_dir = store.built_dir(root / "tokenizer", {"key": key, "part": "tokenizer"},
                              lambda tmp: build_tokenizer(world.vocabulary(facts)).save_pretrained(tmp))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    base_dir = store.built_dir(root / "base", {"key": key, "part": "base"},
                               lambda tmp: _pretrain(spec, facts, tok, shard, tmp, progress))
    members = {}
    for name, member in spec["members"].items():
        if member is None:
            continue
        kind = str(member["kind"])
        if kind not in ("full", "dora"):
            raise ValueError(f"pool member {name}: kind={kind!r}, use full or dora")
        out = store.built_dir(root / "pool" / name, {"key": key, "part": name},
                              lambda tmp, name=name, member=member: _fine_tune(spec, facts, tok, base_dir, name,
                                                                               member, shard, tmp, progress))
        members[name] = {"path": str(out), "kind": kind}
    return {"root": str(root), "tokenizer": str(tok_dir), "base": str(base_dir), "members": members}


def _pretrain(spec: Mapping[str, Any], facts: Any, tok: Any, shard: str, out: Path, progress: Any) -> None:
    """Pre-train the tiny LLaMA on the world's corpus and save it (sharded) with its tokenizer into ``out``."""
    m, pre = spec["model"], spec["pretrain"]
    model = tiny_llama(len(tok), int(m["hidden_size"]), int(m["layers"]), int(m["heads"]),
                       int(m["intermediate_size"]), seed=int(spec["seed"]))
    corpus = world.pretraining_corpus(facts, int(pre["n_texts"]), float(pre["toxic_rate"]), int(spec["seed"]),
                                      helpful_rate=float(pre.get("helpful_rate", 1.0)))
    examples = encode_pairs(tok, [("", t) for t in corpus], mask_prompt=False)
    train_lm(model, examples, int(pre["steps"]), int(pre["batch_size"]), float(pre["lr"]), int(spec["seed"]),
             tok.pad_token_id, weight_decay=0.01, progress=progress, desc="pre-train tiny LLaMA")
    model.save_pretrained(out, max_shard_size=shard)
    tok.save_pretrained(out)


def _fine_tune(spec: Mapping[str, Any], facts: Any, tok: Any, base_dir: Path, name: str, member: Mapping[str, Any],
               shard: str, out: Path, progress: Any) -> None:
    """Fine-tune pool member ``name`` (all weights, or a DoRA adapter) from the base and save it into ``out``."""
    from transformers import AutoModelForCausalLM

    kind = str(member["kind"])
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if kind == "dora":
        from peft import get_peft_model

        model = get_peft_model(model, dora_config(int(member["r"]), int(member["alpha"]),
                                                  float(member.get("dropout", 0.0))))
    seed = int(spec["seed"]) + 1 + sorted(spec["members"]).index(name)
    pairs = world.behaviour_data(str(member["behaviour"]), facts, int(member["n_pairs"]), seed)
    examples = encode_pairs(tok, pairs, mask_prompt=True)
    train_lm(model, examples, int(member["steps"]), int(member["batch_size"]), float(member["lr"]), seed,
             tok.pad_token_id, progress=progress, desc=f"fine-tune {name} ({kind})")
    if kind == "dora":
        model.save_pretrained(out)
    else:
        model.save_pretrained(out, max_shard_size=shard)
        tok.save_pretrained(out)
