"""Trace rules for layers: torch.nn modules and the DARTS operations of rnas_lib.ops.

BatchNorm is traced as a fixed per-channel affine map: its running statistics in eval mode; in
train mode (during search) the statistics of the *clean* batch x, computed once and held constant
over the ball, so the bounded function is the network with those statistics frozen.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import DilConv, FactorizedReduce, Identity, Normalize, ReLUConvBN, SepConv, Zero
from .graph import BoundGraph
from .primitives import (AvgPool, ChannelAffine, Concat, Const, Conv, Crop, Flatten, GlobalAvgPool, Linear, Reshape4,
                         pair)
from .trace import register_trace_rule, trace_module


@register_trace_rule(nn.BatchNorm2d)
def trace_batchnorm(g: BoundGraph, bn: nn.BatchNorm2d, z: int) -> int:
    """BatchNorm as y = scale·z + shift: running statistics in eval mode, the clean batch's
    statistics (biased variance, as PyTorch normalises in training) in train mode."""
    if bn.training or bn.running_mean is None:
        v = g.values[z]
        mean, var = v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return g.add(ChannelAffine(scale, shift), z)


@register_trace_rule(nn.Conv2d)
def trace_conv(g: BoundGraph, conv: nn.Conv2d, z: int) -> int:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"bounds support Conv2d with numeric zero padding, got {conv}")
    return g.add(Conv(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups), z)


@register_trace_rule(nn.Sequential)
def trace_sequential(g: BoundGraph, m: nn.Sequential, z: int) -> int:
    for sub in m:
        z = trace_module(g, sub, z)
    return z


@register_trace_rule(ReLUConvBN)
@register_trace_rule(DilConv)
@register_trace_rule(SepConv)
def trace_op(g: BoundGraph, m: nn.Module, z: int) -> int:
    """A DARTS operation: its ``op`` Sequential."""
    return trace_module(g, m.op, z)


@register_trace_rule(nn.ReLU)
def trace_relu(g: BoundGraph, m: nn.ReLU, z: int) -> int:
    return g.relu(z)


@register_trace_rule(Normalize)
def trace_normalize(g: BoundGraph, m: Normalize, z: int) -> int:
    mean, std = (t.flatten().to(g.values[z].dtype) for t in (m.mean, m.std))
    return g.add(ChannelAffine(1.0 / std, -mean / std), z)


@register_trace_rule(nn.AvgPool2d)
def trace_avgpool(g: BoundGraph, m: nn.AvgPool2d, z: int) -> int:
    if m.ceil_mode or m.divisor_override is not None:
        raise ValueError(f"bounds support AvgPool2d without ceil_mode/divisor_override, got {m}")
    return g.add(AvgPool(m.kernel_size, m.stride, m.padding, m.count_include_pad), z)


@register_trace_rule(nn.MaxPool2d)
def trace_maxpool(g: BoundGraph, m: nn.MaxPool2d, z: int) -> int:
    if m.ceil_mode or m.return_indices or m.dilation not in (1, (1, 1)):
        raise ValueError(f"bounds support MaxPool2d without ceil_mode/dilation/indices, got {m}")
    return g.maxpool(z, m.kernel_size, m.stride, m.padding)


@register_trace_rule(Identity)
@register_trace_rule(nn.Identity)
def trace_identity(g: BoundGraph, m: nn.Module, z: int) -> int:
    return z


@register_trace_rule(Zero)
def trace_zero(g: BoundGraph, m: Zero, z: int) -> int:
    v = g.values[z][:, :, :: m.stride, :: m.stride]
    return g.add(Const(torch.zeros_like(v)))


@register_trace_rule(FactorizedReduce)
def trace_factorized_reduce(g: BoundGraph, fr: FactorizedReduce, z: int) -> int:
    H, W = g.shape(z)[-2:]
    if H % 2 or W % 2:
        raise ValueError(f"FactorizedReduce needs an even spatial size, got {(H, W)}")
    r = g.relu(z)
    a = trace_conv(g, fr.conv_1, r)
    b = trace_conv(g, fr.conv_2, g.add(Crop(), r))
    return trace_batchnorm(g, fr.bn, g.add(Concat(), a, b))


@register_trace_rule(nn.AdaptiveAvgPool2d, "AdaptiveAvgPool2d(1)")
def trace_adaptive_avgpool(g: BoundGraph, m: nn.AdaptiveAvgPool2d, z: int) -> int:
    if pair(m.output_size) != (1, 1):
        raise ValueError(f"bounds support AdaptiveAvgPool2d(1) only, got {m}")
    return g.add(Reshape4(), g.add(GlobalAvgPool(), z))


@register_trace_rule(nn.Flatten)
def trace_flatten(g: BoundGraph, m: nn.Flatten, z: int) -> int:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ValueError(f"bounds support Flatten(1, -1) only, got {m}")
    return g.add(Flatten(g.shape(z)), z) if len(g.shape(z)) > 1 else z


@register_trace_rule(nn.Linear)
def trace_linear(g: BoundGraph, m: nn.Linear, z: int) -> int:
    return g.add(Linear(m.weight, m.bias), z)
