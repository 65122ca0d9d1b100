"""Numbers a user can compare without looking: per-style strength in a mix, and prompt adherence (Sec. 4.2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from devec import store
from devec.style import data


def style_statistics(images: torch.Tensor) -> torch.Tensor:
    """Colour and texture statistics of images in [0, 1] (n x 3 x H x W): the embedded scale's image features.

    Mean and spread of each channel, saturation, a 4-bin luminance histogram, gradient energy along rows,
    columns and both diagonals, and blockiness (row-gradient energy on 4-pixel block edges over elsewhere).
    """
    x = images.float().clamp(0, 1)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    saturation = x.amax(1) - x.amin(1)
    hist = torch.stack([((luma >= lo) & (luma < lo + 0.25 + (1e-6 if lo == 0.75 else 0))).float().mean((1, 2))
                        for lo in (0.0, 0.25, 0.5, 0.75)], 1)
    dx = (luma[:, :, 1:] - luma[:, :, :-1]).abs()
    dy = (luma[:, 1:] - luma[:, :-1]).abs()
    d1 = (luma[:, 1:, 1:] - luma[:, :-1, :-1]).abs()
    d2 = (luma[:, 1:, :-1] - luma[:, :-1, 1:]).abs()
    edges = torch.zeros(dx.shape[-1], dtype=torch.bool)
    edges[3::4] = True
    blocky = dx[:, :, edges].mean((1, 2)) / (dx[:, :, ~edges].mean((1, 2)) + 1e-3)
    return torch.cat([x.mean((2, 3)), x.std((2, 3)), saturation.mean((1, 2))[:, None], hist,
                      torch.stack([dx.mean((1, 2)), dy.mean((1, 2)), d1.mean((1, 2)), d2.mean((1, 2))], 1),
                      (blocky / 10)[:, None]], 1)


def style_strength(mix: torch.Tensor, base: torch.Tensor, style: torch.Tensor) -> float:
    """Fraction of the style's own feature shift the mix shows: <d_mix, d_style> / |d_style|^2, d = f(.) - f(base).

    Features are averaged over the same (prompt, seed) pairs; 1 means as strong as the style alone, 0 absent.
    The style's shift includes whatever it shares with the other styles (see :func:`common_strength`).
    """
    d_mix = mix.mean(0) - base.mean(0)
    e = style.mean(0) - base.mean(0)
    denom = float(e.square().sum())
    return float(d_mix @ e) / denom if denom > 0 else 0.0


def common_shift(base: torch.Tensor, styles: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of the styles' feature shifts from the base: what all style vectors do alike."""
    return torch.stack([s.mean(0) - base.mean(0) for s in styles]).mean(0)


def common_strength(mix: torch.Tensor, base: torch.Tensor, styles: Sequence[torch.Tensor]) -> float:
    """How much of the shared shift the mix shows, <d_mix, c> / |c|^2 (1: as in one style alone; k: added k times)."""
    c = common_shift(base, styles)
    denom = float(c.square().sum())
    return float((mix.mean(0) - base.mean(0)) @ c) / denom if denom > 0 else 0.0


def specific_strength(mix: torch.Tensor, base: torch.Tensor, style: torch.Tensor, styles: Sequence[torch.Tensor]
                      ) -> float:
    """How much of what sets this style apart the mix shows: <d_mix, s> / |s|^2, where s is the style's shift with
    its component along the common shift (:func:`common_shift` of ``styles``) removed.

    1 for the style alone, whatever it shares; adding the shared shift any number of times leaves it unchanged, so a
    mix where the shared concept dominates (Sec. 4.2) and one style's own change is lost shows it here, not in
    :func:`style_strength`. 0 when the style's shift is all along the common shift.
    """
    c = common_shift(base, styles)
    e = style.mean(0) - base.mean(0)
    cc = float(c.square().sum())
    s = e - (float(e @ c) / cc) * c if cc > 0 else e
    denom = float(s.square().sum())
    if denom <= 1e-12 * float(e.square().sum()):  # nothing of its own (rounding left of e - c)
        return 0.0
    return float((mix.mean(0) - base.mean(0)) @ s) / denom


def paired_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of features of the same (prompt, seed) pairs (CLIP similarity at paper scale)."""
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1).mean())


class ShapeClassifier(torch.nn.Module):
    """A small CNN that names the shape in an image whatever its style: the embedded prompt-adherence proxy."""

    def __init__(self, classes: int = len(data.SHAPES)) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def shape_classifier(cache_dir: str | Path, size: int, images: int = 960, steps: int = 300, seed: int = 0,
                     progress: Any = None) -> ShapeClassifier:
    """Train (or load from cache) the shape classifier on content drawn in every embedded style."""
    spec = {"size": size, "images": images, "steps": steps, "seed": seed,
            "code": store.code_version("devec.style.metrics", "devec.style.data")}
    key = store.key(spec, 12)
    path = Path(cache_dir) / "style" / f"shape_classifier_{key}.safetensors"
    found = store.load_entry(path, {"key": key})
    with torch.random.fork_rng(devices=[]):  # the same weights whatever the caller drew before; its stream untouched
        model = ShapeClassifier()
        if found is not None and set(found[0]) == set(model.state_dict()):
            model.load_state_dict(found[0])
            return model.eval()
        model = _train_shape_classifier(size, images, steps, seed, progress)
    store.save_entry(path, model.state_dict(), {"key": key})
    return model.eval()


def _train_shape_classifier(size: int, images: int, steps: int, seed: int, progress: Any) -> ShapeClassifier:
    """The shape classifier trained from ``seed`` on content drawn plain and in every style."""
    torch.manual_seed(seed)
    model = ShapeClassifier()
    content, _, labels = data.make_content(images, size, seed + 101)
    x = torch.cat([content, *[data.apply_style(s, content) for s in data.STYLES]])
    y = labels.repeat(1 + len(data.STYLES))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    steps_iter = progress(range(steps), desc="train shape classifier") if progress else range(steps)
    for _ in steps_iter:
        batch = torch.randint(len(x), (64,), generator=g)
        xb = x[batch] + 0.05 * torch.randn(x[batch].shape, generator=g)
        loss = torch.nn.functional.cross_entropy(model(xb), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def shape_adherence(classifier: ShapeClassifier, images: torch.Tensor, prompts: Sequence[str]) -> float:
    """Mean probability the classifier gives to the shape each prompt asks for (0..1; chance = 1/3)."""
    probs = classifier(images.float()).softmax(-1)
    wanted = torch.tensor([_shape_of(p) for p in prompts])
    return float(probs[torch.arange(len(prompts)), wanted].mean())


def _shape_of(prompt: str) -> int:
    for i, shape in enumerate(data.SHAPES):
        if shape in prompt.split():
            return i
    raise ValueError(f"prompt {prompt!r} names none of the embedded shapes {data.SHAPES}")


class CLIPScorer:
    """CLIP image and text embeddings (transformers, safetensors): style similarity and CLIP score (paper scale)."""

    def __init__(self, model: str, device: str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        from devec import hub

        model = hub.model(model, "data.metrics.clip_model")  # the mirror's copy when one is set
        self.model = CLIPModel.from_pretrained(model, use_safetensors=True).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(model)
        self.device = device

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.processor(images=list(images.float().clamp(0, 1)), return_tensors="pt", do_rescale=False)
        feats = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        # CLIP reads at most max_position_embeddings tokens (77): longer prompts (Fig. 4's) are cut there, as
        # CLIPScore does, whatever model_max_length the tokenizer files declare
        limit = self.model.config.text_config.max_position_embeddings
        inputs = self.processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True,
                                max_length=limit)
        feats = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()

    def clip_score(self, images: torch.Tensor, prompts: Sequence[str]) -> float:
        """100 * max(cos(image, prompt), 0), averaged (Hessel et al. 2021, w = 1)."""
        cos = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return float(100 * cos.clamp(min=0).mean())


class Evaluator:
    """Image features and prompt adherence for one scale, chosen by ``data.metrics.kind``."""

    def __init__(self, cfg: Mapping[str, Any], cache_dir: str | Path, size: int, device: str = "cpu",
                 progress: Any = None) -> None:
        self.kind = cfg["kind"]
        if self.kind == "clip":
            self.clip = CLIPScorer(cfg["clip_model"], device)
            self.adherence_name = "clip_score"
        elif self.kind == "statistics":
            self.classifier = shape_classifier(cache_dir, size, int(cfg["classifier_images"]),
                                               int(cfg["classifier_steps"]), progress=progress)
            self.adherence_name = "shape_adherence"
        else:
            raise ValueError(f"data.metrics.kind={self.kind!r}: use clip (paper scale) or statistics (embedded)")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(images) if self.kind == "clip" else style_statistics(images)

    def normalise(self, feats: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CLIP embeddings as they are; statistics z-scored over every image of the run so all count alike."""
        if self.kind == "clip":
            return dict(feats)
        everything = torch.cat(list(feats.values()))
        mean, std = everything.mean(0), everything.std(0).clamp(min=1e-6)
        return {k: (v - mean) / std for k, v in feats.items()}

    def adherence(self, images: torch.Tensor, prompts: Sequence[str]) -> float:
        if self.kind == "clip":
            return self.clip.clip_score(images, prompts)
        return shape_adherence(self.classifier, images, prompts)
