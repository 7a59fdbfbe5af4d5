import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnas_lib.batchnorm import BatchNorm2d, batch_norm

CL = torch.channels_last


def _cl(t):
    return t.contiguous(memory_format=CL)


def test_channels_last_statistics_are_accurate_in_float32():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(64, 16, 28, 28)) + 0.5
    exact_mean = x.double().mean((0, 2, 3))
    exact_var = x.double().var((0, 2, 3), unbiased=False)
    rm, rv = torch.zeros(16), torch.ones(16)
    y = batch_norm(_cl(x), rm, rv, training=True, momentum=1.0)
    assert y.is_contiguous(memory_format=CL)
    assert ((rm.double() - exact_mean).abs() / exact_mean).max() < 1e-6
    n = x.numel() // 16
    assert ((rv.double() - exact_var * n / (n - 1)) / exact_var).max() < 1e-6
    exact = (x.double() - exact_mean.view(1, -1, 1, 1)) / (exact_var.view(1, -1, 1, 1) + 1e-5).sqrt()
    assert (y.double() - exact).abs().max() < 1e-5


@pytest.mark.parametrize("affine", [False, True])
def test_channels_last_matches_f_batch_norm_and_its_gradients_in_double(affine):
    torch.manual_seed(1)
    x = _cl(torch.randn(3, 4, 5, 5, dtype=torch.float64)).requires_grad_()
    weight = torch.rand(4, dtype=torch.float64, requires_grad=True) + 0.5 if affine else None
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True) if affine else None
    ours = lambda x, *wb: batch_norm(x, None, None, *wb, training=True)  # noqa: E731
    theirs = lambda x, *wb: F.batch_norm(x.contiguous(), None, None, *wb, training=True)  # noqa: E731
    inputs = (x, weight, bias) if affine else (x,)
    assert torch.allclose(ours(*inputs), theirs(*inputs), atol=1e-12)
    assert torch.autograd.gradcheck(ours, inputs)
    assert torch.autograd.gradgradcheck(ours, inputs)  # double backward (Jacobian-norm search)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_module_matches_nn_batchnorm_in_train_and_eval(momentum):
    torch.manual_seed(2)
    ours, theirs = BatchNorm2d(6, momentum=momentum), nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5), theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    for _ in range(3):
        x = torch.randn(8, 6, 7, 7) * 2 + 1
        assert (ours(_cl(x)) - theirs(x)).abs().max() < 1e-5
    for name, buffer in theirs.state_dict().items():
        assert torch.allclose(ours.state_dict()[name].float(), buffer.float(), rtol=1e-5, atol=1e-6), name
    ours.eval(), theirs.eval()
    x = torch.randn(8, 6, 7, 7)
    assert (ours(_cl(x)) - theirs(x)).abs().max() < 1e-5


def test_other_inputs_go_to_f_batch_norm_unchanged():
    x = torch.randn(4, 3, 5, 5)
    rm, rv = torch.zeros(3), torch.ones(3)
    assert torch.equal(batch_norm(x, rm.clone(), rv.clone(), training=True),
                       F.batch_norm(x, rm.clone(), rv.clone(), training=True))


def test_one_value_per_channel_raises():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(_cl(torch.randn(1, 3, 1, 1)), None, None, training=True)


def test_torch_func_jacrev_works_through_it():
    torch.manual_seed(4)
    x = _cl(torch.randn(2, 3, 4, 4, dtype=torch.float64))
    weight = torch.rand(3, dtype=torch.float64) + 0.5
    ours = torch.func.jacrev(lambda x: batch_norm(x, None, None, weight, training=True))(x)
    theirs = torch.func.jacrev(lambda x: F.batch_norm(x.contiguous(), None, None, weight, training=True))(x)
    assert torch.allclose(ours, theirs, atol=1e-12)
