"""Flux pipelines: the hub's FLUX.1-schnell (paper scale) or a tiny Flux built from diffusers configs (embedded)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from devec.dtypes import torch_dtype


def load_pipeline(path: str | Path, dtype: str = "float32", device: str = "cpu") -> Any:
    """``FluxPipeline.from_pretrained`` (a hub id or a saved directory), safetensors only."""
    from diffusers import FluxPipeline

    from devec import hub

    path = hub.model(str(path), "pool.base")  # the mirror's copy when one is set
    pipe = FluxPipeline.from_pretrained(str(path), dtype=torch_dtype(dtype), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def build_tokenizers(words: Sequence[str], max_length: int) -> tuple[Any, Any]:
    """A CLIP BPE tokenizer and a T5 unigram tokenizer whose vocabularies are ``words`` (plus their letters)."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    vocab, merges = _train_bpe(words)
    letters = sorted(set("".join(words)))
    clip = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in letters]
    t5 = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)
    return clip, t5


def _train_bpe(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style BPE vocabulary and merges (``</w>`` word ends) in which every word of ``words`` is one token.

    Trained here rather than by ``tokenizers``' BpeTrainer, whose merges and token ids change from process to
    process (its parallel pair counting breaks ties in any order), so the same seed built a different model: the
    most frequent adjacent pair is merged first, ties broken by the pair itself, until every word is one token.
    Ids: the special tokens, every letter alone and at a word end, then each merge's result in merge order.
    """
    from collections import Counter

    letters = sorted(set("".join(words)))
    symbols = [[*w[:-1], w[-1] + "</w>"] for w in dict.fromkeys(words) if w]
    merges: list[tuple[str, str]] = []
    while counts := Counter(pair for s in symbols for pair in zip(s, s[1:], strict=False)):
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        symbols = [_merge_pair(s, best) for s in symbols]
    order = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    order += ["".join(m) for m in merges]
    return {t: i for i, t in enumerate(dict.fromkeys(order))}, merges


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """``symbols`` with every adjacent occurrence of ``pair`` joined, left to right (one BPE merge)."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def build_tiny_pipeline(arch: Mapping[str, Any], words: Sequence[str], seed: int = 0) -> Any:
    """A randomly initialised ``FluxPipeline`` with the real component classes at small sizes (embedded scale)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    max_len = int(arch["max_sequence_length"])
    tokenizer, tokenizer_2 = build_tokenizers(words, max_len)
    text_dim = int(arch["text_dim"])
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=2 * text_dim, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=max_len, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        projection_dim=text_dim))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=text_dim, d_kv=text_dim // 4, d_ff=2 * text_dim, num_layers=2,
        num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    blocks = list(arch["vae_channels"])
    latent = int(arch["latent_channels"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks), block_out_channels=tuple(blocks), layers_per_block=1,
        latent_channels=latent, norm_num_groups=int(arch.get("vae_groups", 8)), sample_size=int(arch["image_size"]),
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=bool(arch.get("vae_attention", False)),
        shift_factor=0.0, scaling_factor=1.0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent, num_layers=int(arch["num_layers"]),
        num_single_layers=int(arch["num_single_layers"]), attention_head_dim=int(arch["attention_head_dim"]),
        num_attention_heads=int(arch["num_attention_heads"]), joint_attention_dim=text_dim,
        pooled_projection_dim=text_dim, guidance_embeds=False, axes_dims_rope=tuple(arch["axes_dims_rope"]))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5,
                        tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode_prompts(pipe: Any, prompts: Sequence[str], max_sequence_length: int) -> tuple[torch.Tensor, ...]:
    """(T5 embeddings, pooled CLIP embeddings, text ids), exactly as ``FluxPipeline.__call__`` computes them."""
    embeds, pooled, text_ids = pipe.encode_prompt(list(prompts), prompt_2=None,
                                                  max_sequence_length=max_sequence_length, device=pipe.device)
    return embeds, pooled, text_ids


def to_latents(pipe: Any, images: torch.Tensor) -> torch.Tensor:
    """Packed Flux latents of images in [0, 1] (n x 3 x H x W): VAE mode, shift and scale, 2 x 2 packing."""
    vae = pipe.vae
    with torch.no_grad():
        z = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist.mode()
    z = (z - vae.config.shift_factor) * vae.config.scaling_factor
    n, c, h, w = z.shape
    return pipe._pack_latents(z, n, c, h, w)


def image_ids(pipe: Any, image_size: int) -> torch.Tensor:
    """Positional ids of the packed latent tokens for a square image."""
    side = 2 * (image_size // (pipe.vae_scale_factor * 2))
    return pipe._prepare_latent_image_ids(1, side // 2, side // 2, pipe.device, pipe.transformer.dtype)


def flow_matching_loss(pipe: Any, latents: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor,
                       text_ids: torch.Tensor, img_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rectified-flow loss in the convention of FlowMatchEulerDiscreteScheduler: x_s = (1-s) x_0 + s e, v = e - x_0."""
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    s = torch.sigmoid(torch.randn(latents.shape[0], generator=generator)).to(latents)
    noisy = (1 - s.view(-1, 1, 1)) * latents + s.view(-1, 1, 1) * noise
    pred = pipe.transformer(hidden_states=noisy, timestep=s, pooled_projections=pooled, encoder_hidden_states=embeds,
                            txt_ids=text_ids, img_ids=img_ids, guidance=None, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred, noise - latents)


@torch.no_grad()
def generate(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], height: int, width: int, steps: int,
             guidance_scale: float, max_sequence_length: int, batch_size: int = 8) -> torch.Tensor:
    """One image per (prompt, seed) pair as an n x 3 x H x W tensor in [0, 1]; each seed has its own generator."""
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[start:start + batch_size]]
        out = pipe(chunk, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
                   generator=gens, max_sequence_length=max_sequence_length, output_type="pt")
        images.append(out.images.float().cpu())
    return torch.cat(images)
