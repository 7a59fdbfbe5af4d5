"""The primitive nodes of a traced network, one rule set per node type (as auto_LiRPA's
``operators``): every node is an affine map (``base.Affine``: convolutions and per-channel maps in
``conv``, pools and shape operations in ``shape``, sums in ``sums``) except ``relu.ReLU`` and
``maxpool.MaxPool``, which carry their relaxations."""
from .base import Affine, Const, Nonlinear, pair
from .conv import ChannelAffine, Conv, Linear, conv2d, conv_by_taps
from .maxpool import MaxPool
from .relu import RELU_SLOPES, ReLU, relu_relaxation
from .shape import AvgPool, ChannelShuffle, Concat, Crop, Flatten, GlobalAvgPool, Repeat, Reshape4, Slice
from .sums import EdgeSum, MixedEdges, WeightedSum

__all__ = ["Affine", "AvgPool", "ChannelAffine", "ChannelShuffle", "Concat", "Const", "Conv", "Crop", "EdgeSum",
           "Flatten", "GlobalAvgPool", "Linear", "MaxPool", "MixedEdges", "Nonlinear", "RELU_SLOPES", "ReLU",
           "Repeat", "Reshape4", "Slice", "WeightedSum", "conv2d", "conv_by_taps", "pair", "relu_relaxation"]
