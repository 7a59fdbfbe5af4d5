"""Batch normalisation whose float32 batch statistics stay accurate on channels-last CPU tensors.

In training mode y = γ·(x − μ)/√(σ² + eps) + β per channel, with μ and σ² (biased) the mean and
variance of the channel over batch and pixels. PyTorch's CPU kernel for channels-last inputs
computes σ² with a relative error of about 3e-4 in float32 (its contiguous kernel: 1e-7; measured
with torch 2.14.1), and rnas runs its supernet channels-last on the CPU because its
convolutions are 2–3× faster there. So for such inputs rnas computes the statistics itself, in two
passes over the (N·H·W, C) view of the tensor: μ = Σx/M, σ² = Σ(x − μ)²/M (PyTorch's sums are
cascaded, so the error stays near float32's). The backward pass is PyTorch's own
(``native_batch_norm_backward``: accurate in both layouts, and differentiable again, so double
backward through the supernet works). Every other input goes to ``F.batch_norm`` unchanged, and so
does every call made under a torch-function mode (``rnas_lib.jacobian`` catches F.batch_norm calls
to hold the batch statistics constant).

Certificates bound the network as it classifies, BatchNorm on its running statistics
(``check_certifiable``); ``frozen_batch_statistics`` fixes a train-mode model's BatchNorms to one
batch's statistics, the network that certificates with ``batch_statistics=True`` bound.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import has_torch_function_variadic


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """``F.batch_norm`` with accurate batch statistics for channels-last CPU inputs in training mode.

    The running statistics (if given) are updated in place as F.batch_norm does:
    r ← (1 − momentum)·r + momentum·s, with the unbiased batch variance for running_var.
    """
    if (has_torch_function_variadic(x, weight, bias)  # a torch-function mode (jacobian) sees F.batch_norm
            or not (training and x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous()
                    and x.is_contiguous(memory_format=torch.channels_last))):
        y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
        if y.requires_grad and x.dim() == 4:
            y.register_hook(_gradient_in_layout_of(x))
        return y
    y, mean, _, var = _ChannelsLastBatchNorm.apply(x, weight, bias, eps)
    if running_mean is not None:  # x has at least 2 values per channel: it is not also contiguous
        count = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (count / (count - 1)), momentum)
    return y


def _gradient_in_layout_of(x: torch.Tensor):
    """A hook that hands PyTorch's batch-norm backward its output gradient in x's memory layout.

    PyTorch's CPU ``native_batch_norm_backward`` (torch 2.14) returns wrong gradients when x and
    the output gradient have different layouts and one of them is channels-last with a
    non-canonical stride on a size-1 dimension: e.g. x (1, C, H, W) contiguous and a gradient with
    strides (C, 1, W·C, C), which the views of a batch of one image produce (the batch stride of a
    size-1 batch is arbitrary). Its mixed-layout path reads such a tensor wrongly; with both in
    one layout it takes the path that reads them correctly. A copy happens only when the layouts
    differ.
    """
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # by permutes: vmap (batched gradients) cannot query channels-last contiguity
        return lambda grad: None if grad is None else grad.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    return lambda grad: None if grad is None else grad.contiguous()


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """(y, μ, 1/√(σ² + eps), σ²) for a channels-last x (B, C, H, W); only y is differentiable."""

    generate_vmap_rule = True  # torch.func transforms (jacrev, vmap) work through it

    @staticmethod
    def forward(x, weight, bias, eps):
        B, C, H, W = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, C)  # a view: (B·H·W, C)
        mean = rows.sum(0) / rows.shape[0]
        centred = rows - mean
        var = centred.square().sum(0) / rows.shape[0]
        invstd = (var + eps).rsqrt()
        y = centred * (invstd if weight is None else invstd * weight)
        if bias is not None:
            y = y + bias
        return y.view(B, H, W, C).permute(0, 3, 1, 2), mean, invstd, var

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.eps = inputs
        _, mean, invstd, var = output
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, invstd, var)

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_invstd, _grad_var):
        x, weight, mean, invstd = ctx.saved_tensors
        # channels-last as x (mixed layouts are slow), by permutes: vmap (batched gradients) cannot
        # query channels-last contiguity
        grad_y = grad_y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_y, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        return grad_x, grad_weight, grad_bias, None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters, buffers and state dict) computed by ``batch_norm``."""

    def forward(self, x):
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_statistics = self.training or self.running_mean is None
        tracked = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if tracked else None, self.running_var if tracked else None,
                          self.weight, self.bias, use_batch_statistics, momentum, self.eps)


def check_certifiable(model: nn.Module, batch_statistics: bool) -> None:
    """Certificates bound the network as it classifies: BatchNorm on its running statistics."""
    if model.training and not batch_statistics:
        raise ValueError(f"{type(model).__name__} is in train mode, where BatchNorm normalises with the statistics of "
                         "the batch being certified, so a certificate would depend on the batch; call model.eval() "
                         "first, or pass batch_statistics=True if that batch-dependent network is what you mean")


def frozen_batch_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``model`` whose BatchNorms normalise with the statistics of the batch x
    (mean and biased variance, as train mode does): the network that a train-mode model applies to
    x, held fixed over the ε-ball, so that every probe of a certificate bounds the same network
    whichever samples it bounds."""
    frozen = copy.deepcopy(model).train()
    stats = {}

    def record(m, inputs, output):
        v = inputs[0]
        stats[m] = (v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False))

    norms = [m for m in frozen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_hook(record) for m in norms]
    try:
        with torch.no_grad():
            frozen(x)
    finally:
        for h in handles:
            h.remove()
    for m in norms:
        mean, var = stats[m]
        m.running_mean, m.running_var, m.track_running_stats = mean.clone(), var.clone(), True
    return frozen.eval()
