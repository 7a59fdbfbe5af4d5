"""Affine maps that move, pool or reshape values: average pools, global average pool, channel
repeats, slices, crops, concatenations, PC-DARTS' channel shuffle, and reshapes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Affine, crop, cut, pair, rows


class AvgPool(Affine):
    """k×k average pool; with count_include_pad=False each window divides by its valid count."""

    local = "spatial"

    def __init__(self, kernel, stride, padding, count_include_pad):
        self.k, self.s, self.p = pair(kernel), pair(stride), pair(padding)
        self.cip = count_include_pad

    def forward(self, z):
        return F.avg_pool2d(z, self.k, self.s, self.p, count_include_pad=self.cip)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        H, W = in_shapes[0][-2:]
        z = self.window_sums_transpose(rows(A / self.divisor(A, (H, W))), self.p, (H, W))
        return [z.view(A.shape[0], A.shape[1], -1, H, W)]

    def local_transpose(self, A, at, in_shapes):
        """A crop of Λ_y at ``at`` maps to the pixels its windows cover (from at·s − p, cut to the map)."""
        H, W = in_shapes[0][-2:]
        divisor = self.divisor(A, (H, W))
        if not isinstance(divisor, float):
            divisor = crop(divisor, at, A.shape[-2:])
        z = self.window_sums_transpose(rows(A / divisor), (0, 0), None)
        z = z.view(A.shape[0], A.shape[1], -1, *z.shape[-2:])
        return [cut(z, tuple(at[d] * self.s[d] - self.p[d] for d in range(2)), (H, W))]

    def divisor(self, A, size):
        """What each window divides by: k², or (count_include_pad=False) its number of valid pixels (Ho, Wo)."""
        if self.cip:
            return float(self.k[0] * self.k[1])
        ones = A.new_ones(1, 1, *size)
        return F.avg_pool2d(ones, self.k, self.s, self.p, count_include_pad=True)[0, 0] * (self.k[0] * self.k[1])

    def window_sums_transpose(self, a, padding, size):
        """(N, C, *size): the transpose of the map z ↦ (sum of z over each k×k window, ``padding``)
        applied to a (N, C, Ho, Wo): each input pixel sums a over the windows that hold it; with size
        None every pixel the windows cover ((Ho − 1)·s + k per side, unpadded). At stride 1 that is a
        k×k box sum padded by k − 1 − p, i.e. k²·(an average pool that counts the padding; padded
        explicitly beyond the k/2 PyTorch allows): several times faster on a CPU than
        F.conv_transpose2d, its gradient too (benchmarks/bench_pool_transpose.py)."""
        if size is None:
            size = tuple((a.shape[-2 + d] - 1) * self.s[d] + self.k[d] for d in range(2))
        N, C = a.shape[:2]
        a = a.reshape(N * C, 1, *a.shape[-2:])
        if self.s != (1, 1):
            z = window_sums_by_conv_transpose(a, self.k, self.s, padding, size)
        else:
            pad = tuple(self.k[d] - 1 - padding[d] for d in range(2))
            if any(2 * pad[d] > self.k[d] for d in range(2)):
                a, pad = F.pad(a, (pad[1], pad[1], pad[0], pad[0])), (0, 0)
            z = F.avg_pool2d(a, self.k, 1, pad, count_include_pad=True) * (self.k[0] * self.k[1])
        return z.view(N, C, *size)


def window_sums_by_conv_transpose(a, k, s, p, size):
    """``AvgPool.window_sums_transpose`` by F.conv_transpose2d, at any stride s (a: (N, 1, Ho, Wo))."""
    out_pad = tuple(size[d] - ((a.shape[-2 + d] - 1) * s[d] - 2 * p[d] + k[d]) for d in range(2))
    return F.conv_transpose2d(a, a.new_ones(1, 1, *k), None, s, p, out_pad)


class GlobalAvgPool(Affine):
    def forward(self, z):
        return z.mean((-2, -1))

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        H, W = in_shapes[0][-2:]
        return [(A / (H * W))[..., None, None].expand(*A.shape, H, W).contiguous()]


class Repeat(Affine):
    """Channels tiled n times: output channel e·C + c is input channel c."""

    local = "pointwise"

    def __init__(self, n):
        self.n = n

    def forward(self, z):
        return z.repeat(1, self.n, 1, 1)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [A.view(A.shape[0], A.shape[1], self.n, -1, *A.shape[-2:]).sum(2)]


class Slice(Affine):
    """Channels [start, stop) of the input."""

    local = "pointwise"

    def __init__(self, start, stop):
        self.start, self.stop = start, stop

    def forward(self, z):
        return z[:, self.start : self.stop]

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [F.pad(A, (0, 0, 0, 0, self.start, in_shapes[0][0] - self.stop))]


class Crop(Affine):
    """z[:, :, 1:, 1:] (FactorizedReduce's shifted grid)."""

    def forward(self, z):
        return z[:, :, 1:, 1:]

    def abs_linear(self, r):
        return self.forward(r)

    local = "spatial"

    def transpose(self, A, in_shapes):
        return [F.pad(A, (1, 0, 1, 0))]

    def local_transpose(self, A, at, in_shapes):
        return [(A, (at[0] + 1, at[1] + 1))]


class Concat(Affine):
    """Channel concatenation; with ``groups`` = g, the inputs are each split into g groups and
    interleaved group by group (FactorizedReduce of g stacked edges)."""

    local = "pointwise"

    def __init__(self, groups=1):
        self.g = groups

    def forward(self, *zs):
        if self.g == 1:
            return torch.cat(zs, dim=1)
        B, _, H, W = zs[0].shape
        return torch.cat([z.view(B, self.g, -1, H, W) for z in zs], dim=2).view(B, -1, H, W)

    def abs_linear(self, *rs):
        return self.forward(*rs)

    def transpose(self, A, in_shapes):
        B, S, _, H, W = A.shape
        sizes = [s[0] // self.g for s in in_shapes]
        parts = A.view(B, S, self.g, -1, H, W).split(sizes, dim=3)
        return [p.reshape(B, S, self.g * c, H, W) for p, c in zip(parts, sizes)]



class ChannelShuffle(Affine):
    """PC-DARTS' channel shuffle with g groups: input channel k·(C/g) + a is output channel a·g + k."""

    local = "pointwise"

    def __init__(self, groups):
        self.g = groups

    def forward(self, z):
        B, C, H, W = z.shape
        return z.view(B, self.g, C // self.g, H, W).transpose(1, 2).reshape(B, C, H, W)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        B, S, C, H, W = A.shape
        return [A.view(B, S, C // self.g, self.g, H, W).transpose(2, 3).reshape(B, S, C, H, W)]


class Reshape4(Affine):
    """(B, C) → (B, C, 1, 1), as AdaptiveAvgPool2d(1) returns."""

    def forward(self, z):
        return z[..., None, None]

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [A[..., 0, 0]]


class Flatten(Affine):
    def __init__(self, in_shape):
        self.in_shape = in_shape

    def forward(self, z):
        return z.flatten(1)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [A.reshape(A.shape[0], A.shape[1], *self.in_shape)]
