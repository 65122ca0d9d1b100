"""Images the embedded scale trains on: simple shapes, and the same content redrawn in distinct styles (Sec. 4.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

COLOURS = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (0.82, 0.82, 0.78)


def prompt_for(colour: str, shape: str) -> str:
    """The caption every image of this content carries."""
    return f"a {colour} {shape}"


def all_prompts() -> list[str]:
    return [prompt_for(c, s) for c in COLOURS for s in SHAPES]


def vocabulary() -> list[str]:
    """Every word a prompt of the embedded scale can use (the tiny tokenizers are built from it)."""
    words = ["a", "an", "the", "on", "in", "of", "with", "and", "style", *COLOURS, *SHAPES, *STYLES]
    return list(dict.fromkeys(words))


def render(colour: str, shape: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """One 3 x size x size image in [0, 1]: a filled shape near the centre, slightly jittered, on a plain background."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    u = torch.rand(3, generator=generator)
    radius = size * (0.26 + 0.06 * float(u[0]))
    cx = size * (0.38 + 0.24 * float(u[1]))
    cy = size * (0.38 + 0.24 * float(u[2]))
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx.square() + dy.square() <= radius**2
    elif shape == "square":
        mask = (dx.abs() <= radius * 0.85) & (dy.abs() <= radius * 0.85)
    elif shape == "triangle":
        mask = (dy <= radius * 0.8) & (dy >= -radius) & (dx.abs() <= (dy + radius) * 0.6)
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")
    img = torch.tensor(BACKGROUND).view(3, 1, 1).expand(3, size, size).clone()
    fg = torch.tensor(COLOURS[colour]).view(3, 1, 1).expand(3, size, size)
    return torch.where(mask.unsqueeze(0), fg, img)


def make_content(n: int, size: int, seed: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``n`` images (n x 3 x size x size, [0, 1]), their prompts and shape labels, cycling colours and shapes."""
    g = torch.Generator().manual_seed(seed)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    images, prompts, labels = [], [], []
    for i in range(n):
        colour, shape = pairs[i % len(pairs)]
        images.append(render(colour, shape, size, g))
        prompts.append(prompt_for(colour, shape))
        labels.append(SHAPES.index(shape))
    return torch.stack(images), prompts, torch.tensor(labels)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


INK = (0.08, 0.06, 0.1)
PAPER = (0.98, 0.93, 0.78)


def _foreground(x: torch.Tensor) -> torch.Tensor:
    """Where the content differs from the plain background (n x 1 x H x W, 0/1)."""
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    return ((x - bg).abs().sum(1, keepdim=True) > 0.05).float()


def drawn(x: torch.Tensor, width: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The concept the drawn styles share (as the paper's anime styles share anime rendering): the background
    becomes cream paper and the shape gets a dark ink outline. Returns the image and the shape's mask."""
    mask = _foreground(x)
    grown = torch.nn.functional.max_pool2d(mask, 2 * width + 1, 1, width)
    shrunk = 1 - torch.nn.functional.max_pool2d(1 - mask, 2 * width + 1, 1, width)
    ring = (grown - shrunk) > 0.5
    out = torch.where(mask > 0.5, x, torch.tensor(PAPER).view(1, 3, 1, 1).expand_as(x))
    return torch.where(ring, torch.tensor(INK).view(1, 3, 1, 1).expand_as(x), out), mask


def mono(x: torch.Tensor) -> torch.Tensor:
    """Black-and-white photograph analogue: grey, high contrast, darker background; not drawn (no paper, no ink)."""
    y = _luma(x)
    y = ((y - 0.55) * 1.8 + 0.4).clamp(0, 1)
    return y.expand(-1, 3, -1, -1).clone()


def pixel(x: torch.Tensor, block: int = 4, levels: int = 3) -> torch.Tensor:
    """Pixel-art analogue: drawn (paper, ink outline), the shape filled in coarse blocks of a few colour levels."""
    size = x.shape[-1]
    small = torch.nn.functional.avg_pool2d(x, block)
    small = torch.round(small * (levels - 1)) / (levels - 1)
    blocks = torch.nn.functional.interpolate(small, size=(size, size), mode="nearest")
    out, mask = drawn(x)
    ink = (out - torch.tensor(INK).view(1, 3, 1, 1)).abs().sum(1, keepdim=True) < 1e-6
    return torch.where((mask > 0.5) & ~ink, blocks, out)


def stripes(x: torch.Tensor, period: int = 6) -> torch.Tensor:
    """Generic-anime analogue: drawn, with dark diagonal hatching across the shape."""
    out, mask = drawn(x)
    size = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    band = (((xx + yy) // (period // 2)) % 2 == 0).float()
    return torch.where(mask > 0.5, out * (1 - 0.55 * band), out)


def pastel(x: torch.Tensor) -> torch.Tensor:
    """Flat-colour anime analogue: drawn, with pale flat shape colours."""
    out, mask = drawn(x)
    return torch.where((mask > 0.5) & (out.sum(1, keepdim=True) > 0.5), 0.45 * out + 0.55, out)


def warm(x: torch.Tensor) -> torch.Tensor:
    """Studio Ghibli analogue: drawn, with a soft, warm-tinted painted shape."""
    out, mask = drawn(x)
    tint = torch.tensor((1.0, 0.82, 0.55)).view(1, 3, 1, 1)
    soft = torch.nn.functional.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
    return torch.where(mask > 0.5, 0.7 * soft * tint + 0.25, out)


def frame(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """A dark border: the concept every embedded style LoRA also learns (what real style LoRAs share)."""
    out = x.clone()
    dark = torch.tensor((0.08, 0.06, 0.05)).view(1, 3, 1)
    out[..., :width, :] = dark.unsqueeze(-1)
    out[..., -width:, :] = dark.unsqueeze(-1)
    out[..., :, :width] = dark.unsqueeze(-1)
    out[..., :, -width:] = dark.unsqueeze(-1)
    return out


COMMON = {"none": lambda x: x, "frame": frame}


def common_spec(value: Any) -> tuple[str, list[str] | None]:
    """``pool.lora_train.common`` as (change, styles that get it; None: every style): a change name (``none``,
    ``frame``) or ``{change: NAME, styles: [STYLE, ...]}``."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping) and set(value) == {"change", "styles"} and not isinstance(value["styles"], str):
        return str(value["change"]), [str(s) for s in value["styles"]]
    raise ValueError(f"pool.lora_train.common={value!r}: use a change name ({', '.join(sorted(COMMON))}) or "
                     "{change: NAME, styles: [STYLE, ...]} for the styles that share it")


def common_change(name: str, images: torch.Tensor) -> torch.Tensor:
    """Apply the change shared by every style's training set (pool.lora_train.common)."""
    if name not in COMMON:
        raise ValueError(f"pool.lora_train.common={name!r}: use one of {sorted(COMMON)}")
    return COMMON[name](images)


STYLES = {"mono": mono, "pixel": pixel, "stripes": stripes, "pastel": pastel, "warm": warm}


def apply_style(name: str, images: torch.Tensor) -> torch.Tensor:
    """Redraw ``images`` (n x 3 x H x W in [0, 1]) in the named style."""
    if name not in STYLES:
        raise ValueError(f"unknown embedded style {name!r}; pool.styles entries must be among {sorted(STYLES)}")
    return STYLES[name](images).clamp(0, 1)
