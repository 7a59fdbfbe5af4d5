"""Affine maps that move, pool or reshape values: average pools, global average pool, channel
repeats, slices, crops, concatenations, PC-DARTS' channel shuffle, and reshapes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Affine, pair, rows


class AvgPool(Affine):
    """k×k average pool; with count_include_pad=False each window divides by its valid count."""

    def __init__(self, kernel, stride, padding, count_include_pad):
        self.k, self.s, self.p = pair(kernel), pair(stride), pair(padding)
        self.cip = count_include_pad

    def forward(self, z):
        return F.avg_pool2d(z, self.k, self.s, self.p, count_include_pad=self.cip)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        H, W = in_shapes[0][-2:]
        ones = A.new_ones(1, 1, H, W)
        if self.cip:
            divisor = float(self.k[0] * self.k[1])
        else:  # number of valid pixels in each window
            divisor = F.avg_pool2d(ones, self.k, self.s, self.p, count_include_pad=True) * (self.k[0] * self.k[1])
        a = rows(A / divisor)
        z = self.window_sums_transpose(a.reshape(-1, 1, *a.shape[-2:]), (H, W))
        return [z.view(A.shape[0], A.shape[1], -1, H, W)]

    def window_sums_transpose(self, a, size):
        """(N, 1, *size): the transpose of the map z ↦ (sum of z over each k×k window) applied to
        a (N, 1, Ho, Wo): each input pixel sums a over the windows that hold it. At stride 1 that
        is a k×k box sum padded by k − 1 − p, i.e. k²·(an average pool that counts the padding)
        where PyTorch allows that padding (≤ k/2; F.conv2d otherwise): several times faster on a
        CPU than F.conv_transpose2d, its gradient too (benchmarks/bench_pool_transpose.py)."""
        if self.s != (1, 1):
            return window_sums_by_conv_transpose(a, self.k, self.s, self.p, size)
        pad = tuple(self.k[d] - 1 - self.p[d] for d in range(2))
        if all(2 * pad[d] <= self.k[d] for d in range(2)):
            return F.avg_pool2d(a, self.k, 1, pad, count_include_pad=True) * (self.k[0] * self.k[1])
        return F.conv2d(a, a.new_ones(1, 1, *self.k), None, 1, pad)


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

    def transpose(self, A, in_shapes):
        return [F.pad(A, (1, 0, 1, 0))]


class Concat(Affine):
    """Channel concatenation; with ``groups`` = g, the inputs are each split into g groups and
    interleaved group by group (FactorizedReduce of g stacked edges)."""

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
