"""Input gradients at every shape: the supernet, the derived network and every custom autograd
function, over batch sizes 1–3, image sizes whose reductions end even (8 → 4 → 2) or odd
(12 → 6 → 3), both memory layouts, eval and train mode, against central finite differences in
float64 (and float32 against float64).

A batch of one image is the case that broke: PyTorch's CPU batch-norm backward misreads an output
gradient whose size-1 batch dimension has a non-canonical stride when the input is in the other
layout (see ``rnas_lib.batchnorm._gradient_in_layout_of``).
"""
import pytest
import torch
import torch.nn.functional as F

from rnas_lib.batchnorm import batch_norm
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.jacobian import _StatGate, _stats_cut
from rnas_lib.network import Network
from rnas_lib.supernet import SearchNetwork, SourceEdges, _DepthwiseConv

CL = torch.channels_last
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": CL}


def _directional_error(model, x, directions=2, steps=(1e-6, 1e-7)):
    """Relative error of ⟨∇_x(v·f), u⟩ against finite differences of v·f along u, in float64, for
    random v and u: the worst direction, each at its best difference (central, forward or backward)
    and step h. A ReLU or max-pool kink within h·u spoils the differences that cross it; autograd's
    gradient is then the one-sided derivative on the other side."""
    x = x.detach().requires_grad_()
    y = model(x)
    v = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, v)
    worst = 0.0
    with torch.no_grad():
        f0 = (model(x) * v).sum()
        for _ in range(directions):
            u = torch.randn_like(x)
            analytic = (grad * u).sum()
            errors = []
            for h in steps:
                plus, minus = (model(x + h * u) * v).sum(), (model(x - h * u) * v).sum()
                for numeric in ((plus - minus) / (2 * h), (plus - f0) / h, (f0 - minus) / h):
                    errors.append((abs(numeric - analytic) / (abs(numeric) + 1e-6)).item())
            worst = max(worst, min(errors))
    return worst


def _input(batch, size, layout, channels=1):
    return torch.rand(batch, channels, size, size, dtype=torch.float64).contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("size", [8, 12])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_supernet_input_gradient_matches_finite_differences(batch, size, layout, mode):
    torch.manual_seed(0)
    net = SearchNetwork(4, 3, 3, in_channels=1).double()
    getattr(net, mode)()
    x = _input(batch, size, layout)
    if batch == 1 and mode == "train":
        # every channel of every node is BatchNorm-centred over the image's pixels, so global
        # average pooling gives 0 and the logits are the classifier's bias, whatever the image
        x.requires_grad_()
        y = net(x)
        assert torch.allclose(y, net.classifier.bias.expand_as(y), atol=1e-12)
        assert torch.autograd.grad(y[:, 0].sum(), x)[0].abs().max() < 1e-12
        return
    assert _directional_error(net, x) < 1e-5


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("size", [8, 12, 16])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_network_input_gradient_matches_finite_differences(batch, size, layout, mode):
    torch.manual_seed(0)
    net = Network("DARTS_V2", 4, 3, 3, in_channels=1).double()
    getattr(net, mode)()
    assert _directional_error(net, _input(batch, size, layout)) < 1e-5


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_every_published_network_has_right_gradients_for_one_image(name):
    torch.manual_seed(1)
    net = Network(name, 4, 3, 3, in_channels=1).double().eval()
    assert _directional_error(net, _input(1, 8, "channels_last")) < 1e-5


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch", [1, 3])
def test_supernet_float32_gradient_matches_float64(batch, layout):
    torch.manual_seed(0)
    net = SearchNetwork(4, 3, 3, in_channels=1).eval()
    x = _input(batch, 8, layout).float()
    grads = []
    for model, inp in ((net, x), (net.double(), x.double())):
        inp = inp.detach().requires_grad_()
        grads.append(torch.autograd.grad(model(inp)[:, 0].sum(), inp)[0].double())
    assert (grads[0] - grads[1]).norm() / grads[1].norm() < 1e-4


@pytest.mark.parametrize("stride", [1, 2])
def test_source_edges_input_gradient_does_not_depend_on_the_gradient_layout(stride):
    """A batch of one: the output gradient's layout (contiguous or channels-last) is arbitrary."""
    torch.manual_seed(0)
    src = SourceEdges(4, 3, stride).double().eval()
    w = torch.softmax(torch.randn(3, 8, dtype=torch.float64), -1)
    x = _input(1, 8, "channels_last", channels=4).requires_grad_()
    y = src(x, w).flatten(1, 2)  # the cell's view of the edge outputs
    v = torch.randn_like(y)
    g_contiguous, g_channels_last = (torch.autograd.grad(y, x, v.contiguous(memory_format=f), retain_graph=True)[0]
                                     for f in (torch.contiguous_format, CL))
    assert torch.allclose(g_contiguous, g_channels_last, atol=1e-12)


# -- the custom autograd functions and the batch-norm wrapper -------------------------------------

@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("n, k, dilation", [(1, 3, 1), (2, 5, 2)])
def test_depthwise_conv_gradcheck(batch, layout, n, k, dilation):
    torch.manual_seed(0)
    C, pad = 2, dilation * (k - 1) // 2
    x = _input(batch, 5, layout, channels=C).requires_grad_()
    w = torch.randn(C * n, 1, k, k, dtype=torch.float64, requires_grad=True)
    f = lambda x, w: _DepthwiseConv.apply(x, w, pad, dilation)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))


def _odd_channels_last(t):
    """t in channels-last order with the stride of its size-1 batch dimension set to C (as views make it)."""
    B, C, H, W = t.shape
    return t.contiguous(memory_format=CL).as_strided(t.shape, (C, 1, W * C, C))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last", "odd_channels_last"])
def test_batch_norm_gradient_for_any_pair_of_layouts(x_layout, training):
    """The defect behind the batch-size-1 gradients: x and its output gradient in different layouts,
    one with a non-canonical stride on the size-1 batch dimension."""
    torch.manual_seed(0)
    C = 6
    base = torch.randn(1, C, 4, 4, dtype=torch.float64)
    x = {"contiguous": base, "channels_last": base.contiguous(memory_format=CL),
         "odd_channels_last": _odd_channels_last(base)}[x_layout].requires_grad_()
    weight = torch.rand(C, dtype=torch.float64, requires_grad=True)
    stats = torch.randn(C, dtype=torch.float64), torch.rand(C, dtype=torch.float64) + 0.5
    v = torch.randn(1, C, 4, 4, dtype=torch.float64)
    x_ref = base.clone().requires_grad_()
    expected = torch.autograd.grad(F.batch_norm(x_ref, *stats, weight, None, training), (x_ref, weight), v)
    for grad_out in (v, v.contiguous(memory_format=CL), _odd_channels_last(v)):
        y = batch_norm(x, stats[0].clone(), stats[1].clone(), weight, None, training)
        for got, want in zip(torch.autograd.grad(y, (x, weight), grad_out), expected):
            assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_channels_last_batch_norm_gradcheck(batch, affine):
    torch.manual_seed(0)
    x = _input(batch, 3, "channels_last", channels=3).requires_grad_()
    params = (torch.rand(3, dtype=torch.float64, requires_grad=True),
              torch.randn(3, dtype=torch.float64, requires_grad=True)) if affine else (None, None)
    f = lambda x, *p: batch_norm(x, None, None, *(p or params), training=True)  # noqa: E731
    inputs = (x, *params) if affine else (x,)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_stat_gate_is_the_identity_and_blocks_gradient_while_closed():
    t = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_StatGate.apply, (t,))
    with _stats_cut():
        out = _StatGate.apply(t)
        assert torch.equal(out, t)
        assert torch.autograd.grad(out.sum(), t, allow_unused=True)[0] is None
