"""Training-time data augmentation of DARTS' CIFAR recipe, on batches of pixels (B, C, H, W) in [0, 1].

- ``random_crop``: zero-pad by p pixels on every side, then cut an H×W window at a uniformly drawn
  offset (0..2p, 0..2p) per image (torchvision's ``RandomCrop(H, padding=p)``; black borders).
- ``random_flip``: mirror each image left–right with probability ½.
- ``cutout`` (DeVries & Taylor 2017, as in DARTS' ``utils.Cutout``): per image a square of side L
  centred at a uniform pixel (cy, cx), rows [cy − L//2, cy + L//2) × columns [cx − L//2, cx + L//2)
  clipped to the image, is set to ``fill``. DARTS cuts out *after* normalising, i.e. to the dataset
  mean; rnas's inputs are pixels (the model normalises), so ``fill`` is the per-channel mean.

All draws come from ``generator`` (on the CPU), so a seeded training run is reproducible and resumable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _draw(high: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator).to(device)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"crop padding must be an integer ≥ 0 (pixels), got {padding!r}")
    if padding == 0:
        return x
    B, C, H, W = x.shape
    padded = F.pad(x, (padding,) * 4)
    oy, ox = _draw(2 * padding + 1, B, generator, x.device), _draw(2 * padding + 1, B, generator, x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, :]  # (B, 1, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(B, device=x.device)[:, None, None], rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = _draw(2, len(x), generator, x.device).bool().view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def cutout(x: torch.Tensor, length: int, fill, generator: torch.Generator | None = None) -> torch.Tensor:
    """``fill``: a number or one value per channel."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"cutout length must be an integer ≥ 0 (pixels; 0 switches it off), got {length!r}")
    if length == 0:
        return x
    B, C, H, W = x.shape
    cy, cx = _draw(H, B, generator, x.device), _draw(W, B, generator, x.device)
    ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    inside_y = (ys >= (cy - length // 2)[:, None]) & (ys < (cy + length // 2)[:, None])  # (B, H)
    inside_x = (xs >= (cx - length // 2)[:, None]) & (xs < (cx + length // 2)[:, None])  # (B, W)
    mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (B, 1, H, W)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return torch.where(mask, fill, x)


def augment(x: torch.Tensor, crop_padding: int = 0, flip: bool = False, cutout_length: int = 0, fill=0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """DARTS' order: random crop, horizontal flip, then cutout."""
    x = random_crop(x, crop_padding, generator)
    if flip:
        x = random_flip(x, generator)
    return cutout(x, cutout_length, fill, generator)
