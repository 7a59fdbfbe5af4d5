"""The DARTS search space: one registry of primitives and their building blocks.

Every convolutional primitive is ReLU → conv → BatchNorm ("ReLU-conv-BN"); separable convs apply
that block twice (depthwise k×k then pointwise 1×1), dilated convs once with dilation 2. Pooling
ops carry no parameters. In a reduction cell an edge from an input node has stride 2, so
``skip_connect`` becomes ``FactorizedReduce`` (two 1×1 stride-2 convs on offset grids, concatenated).

The registry holds one ``Primitive`` per op: its name, its builder ``(C, stride, affine) → module``
(C channels in and out; stride 2 halves the resolution), its plot colour, and whether the supernet's
fused edges (``rnas_lib.supernet.SourceEdges``) compute it. The eight DARTS ops are fused; an op added
with ``register_primitive`` runs as its own module on every supernet edge. ``PRIMITIVES`` (names, in
order: α's columns), ``OPS`` (builders) and ``OP_COLORS`` are live read-only views of the registry,
so code that reads them when it builds a model sees every registered op.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .batchnorm import BatchNorm2d


@dataclass(frozen=True)
class Primitive:
    """One search-space op: ``builder(C, stride, affine)`` returns its module on C channels."""

    name: str
    builder: Callable[[int, int, bool], nn.Module]
    color: str
    fused: bool = False  # True only for the eight DARTS ops that SourceEdges computes


_REGISTRY: dict[str, Primitive] = {}  # insertion order is α's column order


class _NameView(Sequence):
    """The registered primitive names in order (a live, read-only view of the registry)."""

    def __len__(self):
        return len(_REGISTRY)

    def __getitem__(self, i):
        return tuple(_REGISTRY)[i]

    def __contains__(self, name):
        return isinstance(name, str) and name in _REGISTRY

    def __eq__(self, other):
        return isinstance(other, (tuple, list, _NameView)) and tuple(self) == tuple(other)

    __hash__ = None

    def __repr__(self):
        return repr(tuple(self))


class _FieldView(Mapping):
    """name → one field of its registry entry (a live, read-only view)."""

    def __init__(self, field: str):
        self.field = field

    def __getitem__(self, name):
        return getattr(_REGISTRY[name], self.field)

    def __iter__(self):
        return iter(tuple(_REGISTRY))

    def __len__(self):
        return len(_REGISTRY)


PRIMITIVES = _NameView()
OPS = _FieldView("builder")
OP_COLORS = _FieldView("color")


def registered_primitives() -> tuple[Primitive, ...]:
    """The registry's entries, in α's column order."""
    return tuple(_REGISTRY.values())


class ReLUConvBN(nn.Module):
    """y = BN(conv_{k×k}(ReLU(x))). Runs without oneDNN (mkldnn): on some CPUs (measured on an AMD
    EPYC host, one thread) its 1×1 convolution with few output channels (a C=2 supernet's
    preprocessing) corrupted the heap and aborted the process; PyTorch's native kernel computes
    the same convolution."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        with torch.backends.mkldnn.flags(enabled=False):
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
    """The module of one registered primitive on C channels (DARTS' OPS table)."""
    if primitive not in _REGISTRY:
        raise ValueError(f"unknown primitive {primitive!r}; registered: {', '.join(_REGISTRY)} "
                         "(add one with rnas_lib.ops.register_primitive)")
    return _REGISTRY[primitive].builder(C, stride, affine)


def _conv_op(k: int, dilation: int, separable: bool) -> Callable[[int, int, bool], nn.Module]:
    padding = dilation * (k - 1) // 2
    if separable:
        return lambda C, stride, affine: SepConv(C, C, k, stride, padding, affine=affine)
    return lambda C, stride, affine: DilConv(C, C, k, stride, padding, dilation, affine=affine)


#: the eight DARTS primitives, in DARTS' order; the supernet fuses all of them
DARTS_PRIMITIVES = (
    Primitive("none", lambda C, stride, affine: Zero(stride), "tab:gray", fused=True),
    Primitive("max_pool_3x3", lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
              "tab:orange", fused=True),
    Primitive("avg_pool_3x3", lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1,
                                                                      count_include_pad=False),
              "tab:olive", fused=True),
    Primitive("skip_connect", lambda C, stride, affine: Identity() if stride == 1
              else FactorizedReduce(C, C, affine=affine), "tab:red", fused=True),
    Primitive("sep_conv_3x3", _conv_op(3, 1, True), "tab:purple", fused=True),
    Primitive("sep_conv_5x5", _conv_op(5, 1, True), "tab:brown", fused=True),
    Primitive("dil_conv_3x3", _conv_op(3, 2, False), "tab:pink", fused=True),
    Primitive("dil_conv_5x5", _conv_op(5, 2, False), "tab:cyan", fused=True),
)
_REGISTRY.update((p.name, p) for p in DARTS_PRIMITIVES)


def _check_new(name, builder, color) -> None:
    """ValueError unless (name, builder, color) can join the registry (the builder is tried on a
    4-channel 8×8 batch at strides 1 and 2)."""
    how = "register_primitive(name, builder, color): "
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{how}name must be a Python identifier such as 'conv_7x1_1x7', got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"{how}primitive {name!r} is already registered (registered: {', '.join(_REGISTRY)}); "
                         "choose another name, or unregister_primitive it first")
    if not callable(builder):
        raise ValueError(f"{how}builder must be callable as builder(C, stride, affine) -> nn.Module, "
                         f"got {type(builder).__name__}")
    from matplotlib.colors import is_color_like  # only here: ops is imported by every model

    if not isinstance(color, str) or not is_color_like(color):
        raise ValueError(f"{how}color must be a matplotlib colour name such as 'tab:green', got {color!r}")
    for stride in (1, 2):
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():  # the probe leaves the RNG as it was
                op = builder(4, stride, False)
                out = op(torch.zeros(2, 4, 8, 8)) if isinstance(op, nn.Module) else None
        except Exception as err:
            raise ValueError(f"{how}builder(4, {stride}, False) for {name!r} failed: {err!r}") from err
        side = 8 // stride
        if out is None or tuple(out.shape) != (2, 4, side, side):
            got = type(op).__name__ if out is None else f"output {tuple(out.shape)}"
            raise ValueError(f"{how}builder(C, stride, affine) for {name!r} must return an nn.Module mapping "
                             f"(B, C, H, W) to (B, C, H/stride, W/stride); on (2, 4, 8, 8) at stride {stride} "
                             f"it gave {got}, not (2, 4, {side}, {side})")


def register_primitive(name: str, builder: Callable[[int, int, bool], nn.Module], color: str) -> Primitive:
    """Add a primitive to the search space (a new last column of α). The supernet runs it as its own
    module on every edge (it is not fused); every model built afterwards includes it."""
    _check_new(name, builder, color)
    entry = _REGISTRY[name] = Primitive(name, builder, color)
    return entry


def unregister_primitive(name: str) -> None:
    """Remove a primitive added with register_primitive (the eight DARTS ones stay)."""
    if name not in _REGISTRY or _REGISTRY[name].fused:
        added = [n for n, p in _REGISTRY.items() if not p.fused]
        raise ValueError(f"unregister_primitive: {name!r} was not added with register_primitive; "
                         f"removable: {', '.join(added) or 'none'}")
    del _REGISTRY[name]


@contextmanager
def registered_primitive(name: str, builder: Callable[[int, int, bool], nn.Module], color: str):
    """``with registered_primitive(...) as entry:`` the primitive is registered inside the block only."""
    entry = register_primitive(name, builder, color)
    try:
        yield entry
    finally:
        unregister_primitive(name)


class Normalize(nn.Module):
    """The first layer of every rnas model: (x − mean)/std per channel, so that ε is in pixel units."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std
