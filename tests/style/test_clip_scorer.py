"""The paper-scale scorer (CLIP similarity and CLIP score) on a tiny CLIP saved in the hub's format."""

from __future__ import annotations

import torch

from devec.style import data
from devec.style.metrics import CLIPScorer
from devec.style.pipeline import build_tokenizers


def _save_tiny_clip(path, model_max_length: int | None = None) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    clip_tok, _ = build_tokenizers(data.vocabulary(), max_length=8)
    if model_max_length is not None:
        clip_tok.model_max_length = model_max_length
    config = CLIPConfig(
        text_config={"vocab_size": len(clip_tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 8, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path, safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tok).save_pretrained(path)


def test_clip_scorer_loads_a_saved_clip_and_scores_in_range(tmp_path):
    _save_tiny_clip(tmp_path)
    scorer = CLIPScorer(str(tmp_path))
    images, prompts, _ = data.make_content(4, 64, seed=0)
    feats = scorer.image_features(images)
    assert feats.shape == (4, 8)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(4))
    assert not torch.allclose(feats[0], feats[1])
    score = scorer.clip_score(images, prompts)
    assert 0.0 <= score <= 100.0


def test_clip_score_cuts_prompts_at_the_models_positions(tmp_path):
    """A prompt longer than CLIP's positions (Fig. 4's is 86 tokens) is cut there, even when the tokenizer files
    declare no limit (model_max_length 1e30, as some hub tokenizers do)."""
    _save_tiny_clip(tmp_path, model_max_length=10**30)
    scorer = CLIPScorer(str(tmp_path))
    images, prompts, _ = data.make_content(2, 64, seed=0)
    long = [" ".join([p] * 6) for p in prompts]                     # well past 8 positions
    assert len(scorer.processor.tokenizer(long[0])["input_ids"]) > 8
    short_cut = scorer.text_features([" ".join(long[0].split()[:20])])
    assert 0.0 <= scorer.clip_score(images, long) <= 100.0
    assert scorer.text_features(long[:1]).shape == short_cut.shape
