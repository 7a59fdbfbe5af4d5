"""The DARTS search space: the eight primitives and their building blocks.

Every convolutional primitive is ReLU → conv → BatchNorm ("ReLU-conv-BN"); separable convs apply
that block twice (depthwise k×k then pointwise 1×1), dilated convs once with dilation 2. Pooling
ops carry no parameters. In a reduction cell an edge from an input node has stride 2, so
``skip_connect`` becomes ``FactorizedReduce`` (two 1×1 stride-2 convs on offset grids, concatenated).
"""
from __future__ import annotations

import torch
from torch import nn

from .batchnorm import BatchNorm2d

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: the convolutional primitives as (kernel size, dilation, separable), in PRIMITIVES order
CONV_PRIMITIVES = {
    "sep_conv_3x3": (3, 1, True),
    "sep_conv_5x5": (5, 1, True),
    "dil_conv_3x3": (3, 2, False),
    "dil_conv_5x5": (5, 2, False),
}


class ReLUConvBN(nn.Module):
    """y = BN(conv_{k×k}(ReLU(x)))."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """y = BN(pointwise(depthwise_dilated(ReLU(x))))."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """Two DilConv blocks with dilation 1; only the first one strides."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The ``none`` primitive: 0 · x, sub-sampled when the edge strides."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution: BN([conv1x1_s2(ReLU x), conv1x1_s2(ReLU x shifted by one pixel)])."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(
                f"FactorizedReduce needs an even spatial size, got {tuple(x.shape[-2:])}; "
                "use an input size divisible by 4 (two reductions)"
            )
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(primitive: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    """The module for one primitive on C channels (DARTS' OPS table)."""
    if primitive == "none":
        return Zero(stride)
    if primitive == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if primitive == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if primitive == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)
    if primitive in CONV_PRIMITIVES:
        k, dilation, separable = CONV_PRIMITIVES[primitive]
        padding = dilation * (k - 1) // 2
        if separable:
            return SepConv(C, C, k, stride, padding, affine=affine)
        return DilConv(C, C, k, stride, padding, dilation, affine=affine)
    raise ValueError(f"unknown primitive {primitive!r}; allowed: {', '.join(PRIMITIVES)}")


class Normalize(nn.Module):
    """The first layer of every rnas model: (x − mean)/std per channel, so that ε is in pixel units."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std
