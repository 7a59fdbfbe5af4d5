"""Affine maps with weights: convolutions (depthwise, dilated, strided), the linear head, and
per-channel affine maps (BatchNorm with fixed statistics, Normalize)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Affine, cut, pair, rows, unrows


class Conv(Affine):
    """y = w ⋆ z + b (F.conv2d); its transpose maps Λ_y to Λ_z = Λ_y ⋆ᵀ w."""

    local = "spatial"

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        self.w, self.b, self.groups = weight, bias, groups
        self.stride, self.padding, self.dilation = pair(stride), pair(padding), pair(dilation)
        self.flipped = None  # the transpose's kernel, built on first use

    def forward(self, z):
        y = self.linear(z)
        return y if self.b is None else y + self.b.view(-1, 1, 1)

    def linear(self, z):
        return conv2d(z, self.w, self.stride, self.padding, self.dilation, self.groups)

    def abs_linear(self, r):
        return conv2d(r, self.w.abs(), self.stride, self.padding, self.dilation, self.groups)

    def transpose(self, A, in_shapes):
        return [unrows(self.transpose_rows(rows(A), self.padding, in_shapes[0][-2:]), A)]

    def local_transpose(self, A, at, in_shapes):
        """A crop of Λ_y at ``at`` maps to the inputs its outputs read: the transpose without padding
        (every pixel the window's kernels touch) from (at·s − p), cut to the input map."""
        z = unrows(self.transpose_rows(rows(A), (0, 0), None), A)
        return [cut(z, tuple(at[d] * self.stride[d] - self.padding[d] for d in range(2)), in_shapes[0][-2:])]

    def transpose_rows(self, a, padding, size):
        """a (R, co, h, w) through the transpose of this convolution with ``padding``: (R, ci, *size),
        or with size None every input pixel it reaches ((h − 1)·s + d·(k − 1) + 1 per side, unpadded)."""
        k = self.w.shape[-2:]
        if size is None:
            size = tuple((a.shape[-2 + d] - 1) * self.stride[d] + self.dilation[d] * (k[d] - 1) + 1 for d in range(2))
        # the transpose of a stride-1 convolution is a convolution with the flipped, group-transposed kernel
        g, (co, ci) = self.groups, self.w.shape[:2]
        if self.flipped is None:
            self.flipped = self.w.view(g, co // g, ci, *k).transpose(1, 2).reshape(g * ci, co // g, *k).flip(-1, -2)
        wt = self.flipped
        if self.stride == (1, 1) and all(self.dilation[d] * (k[d] - 1) >= padding[d] for d in range(2)):
            pad = tuple(self.dilation[d] * (k[d] - 1) - padding[d] for d in range(2))
            if g == 1 and math.prod(k) > 1 and 4 * wt.shape[0] <= wt.shape[1]:
                return conv_by_taps(a, wt, pad, self.dilation)
            return conv2d(a, wt, (1, 1), pad, self.dilation, g)
        if k == (1, 1) and padding == (0, 0) and g == 1:
            # a strided pointwise kernel (DARTS' FactorizedReduce) reads every s-th pixel: its transpose
            # writes the pointwise transpose of a there, zeros elsewhere
            z = a.new_zeros(len(a), ci, *size)
            z[:, :, :: self.stride[0], :: self.stride[1]] = conv2d(a, wt, (1, 1), (0, 0), (1, 1), 1)
            return z
        out_pad = tuple(
            size[d] - ((a.shape[-2 + d] - 1) * self.stride[d] - 2 * padding[d] + self.dilation[d] * (k[d] - 1) + 1)
            for d in range(2)
        )
        return F.conv_transpose2d(a, self.w, None, self.stride, padding, out_pad, self.groups, self.dilation)

    def bias_term(self, A):
        return None if self.b is None else (A.sum((-1, -2)) * self.b).sum(-1)


def conv2d(z, w, stride, padding, dilation, groups):
    """F.conv2d without bias; a pointwise (1×1, stride 1, unpadded, one group) kernel as a batched
    matmul W·z over the pixels (faster than conv2d on a CPU for these small maps)."""
    if w.shape[-2:] == (1, 1) and stride == (1, 1) and padding == (0, 0) and groups == 1:
        R, ci, H, W = z.shape
        return torch.matmul(w.view(w.shape[0], ci), z.reshape(R, ci, H * W)).view(R, -1, H, W)
    return F.conv2d(z, w, None, stride, padding, dilation, groups)


def conv_by_taps(a, w, padding, dilation):
    """F.conv2d(a, w, padding=padding, dilation=dilation), stride 1, one group, computed as one
    channel contraction for all taps, z_t = W_t·a (a batched matmul), then out = Σ_t shift_t(z_t).
    Used for kernels that map many channels to few (the transpose of a stem convolution, ending
    every backward pass at the image), where it beats F.conv2d on a CPU."""
    R, ci, H, W = a.shape
    co, _, kh, kw = w.shape
    Ho, Wo = H + 2 * padding[0] - dilation[0] * (kh - 1), W + 2 * padding[1] - dilation[1] * (kw - 1)
    z = torch.matmul(w.permute(2, 3, 0, 1).reshape(kh * kw * co, ci), a.reshape(R, ci, H * W))
    z = z.view(R, kh, kw, co, H, W)
    out = a.new_zeros(R, co, Ho, Wo)
    for i in range(kh):
        for j in range(kw):  # out[y, x] += z_ij[y + i·d − p, x + j·d − p] where that pixel exists
            dy, dx = i * dilation[0] - padding[0], j * dilation[1] - padding[1]
            y0, y1, x0, x1 = max(0, -dy), min(Ho, H - dy), max(0, -dx), min(Wo, W - dx)
            if y0 < y1 and x0 < x1:
                out[:, :, y0:y1, x0:x1] += z[:, i, j, :, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
    return out


class Linear(Affine):
    """y = W·z + b (the classifier head)."""

    def __init__(self, weight, bias=None):
        self.w, self.b = weight, bias

    def forward(self, z):
        return F.linear(z, self.w, self.b)

    def linear(self, z):
        return F.linear(z, self.w)

    def abs_linear(self, r):
        return F.linear(r, self.w.abs())

    def transpose(self, A, in_shapes):
        return [A @ self.w]

    def bias_term(self, A):
        return None if self.b is None else A @ self.b


class ChannelAffine(Affine):
    """y = scale_c · z + shift_c per channel (BatchNorm with fixed statistics, Normalize)."""

    local = "pointwise"

    def __init__(self, scale, shift):
        self.scale, self.shift = scale.view(-1, 1, 1), shift.view(-1, 1, 1)

    def forward(self, z):
        return z * self.scale + self.shift

    def linear(self, z):
        return z * self.scale

    def abs_linear(self, r):
        return r * self.scale.abs()

    def transpose(self, A, in_shapes):
        return [A * self.scale]

    def bias_term(self, A):
        return (A.sum((-2, -1)) * self.shift.view(-1)).sum(-1)
