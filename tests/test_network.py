import pytest
import torch

from rnas_lib.genotypes import PUBLISHED, random_genotype
from rnas_lib.network import Network, drop_path
from rnas_lib.ops import PRIMITIVES, FactorizedReduce, make_op
from rnas_lib.reference import ReferenceNetwork


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_network_shapes(name):
    net = Network(name, C=4, num_classes=10, layers=3, in_channels=1)
    assert net(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    net3 = Network(name, C=4, num_classes=7, layers=5, in_channels=3)
    assert net3(torch.rand(2, 3, 16, 16)).shape == (2, 7)


def test_every_primitive_keeps_or_halves_the_shape():
    x = torch.rand(2, 6, 8, 8)
    for p in PRIMITIVES:
        assert make_op(p, 6, 1)(x).shape == x.shape
        assert make_op(p, 6, 2)(x).shape == (2, 6, 4, 4)
    with pytest.raises(ValueError, match="unknown primitive"):
        make_op("conv_9x9", 4, 1)
    with pytest.raises(ValueError, match="even spatial size"):
        FactorizedReduce(4, 4)(torch.rand(1, 4, 7, 7))


def test_normalisation_is_the_first_layer():
    net = Network("DARTS_V2", 4, 10, 3, in_channels=1, mean=[0.5], std=[0.25]).eval()
    ref = Network("DARTS_V2", 4, 10, 3, in_channels=1).eval()
    ref.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("normalize")}, strict=False)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(net(x), ref((x - 0.5) / 0.25), atol=1e-6)


def test_drop_path_is_unbiased_and_off_in_eval():
    torch.manual_seed(0)
    x = torch.ones(20000, 1, 1, 1)
    y = drop_path(x, 0.3)
    assert abs(y.mean().item() - 1.0) < 0.03
    assert torch.allclose(y.unique(), torch.tensor([0.0, 1 / 0.7]))
    net = Network(random_genotype(generator=torch.Generator().manual_seed(0)), 4, 10, 3, in_channels=1,
                  drop_path_prob=0.5)
    without = Network(net.genotype, 4, 10, 3, in_channels=1)
    without.load_state_dict(net.state_dict())
    x = torch.rand(4, 1, 8, 8)
    net.eval(), without.eval()
    assert torch.equal(net(x), without(x))  # off in eval
    net.train(), without.train()
    assert not torch.allclose(net(x), without(x))  # on in training


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="C must be a positive integer"):
        Network("DARTS_V2", 0, 10, 3)
    with pytest.raises(ValueError, match="drop_path_prob"):
        Network("DARTS_V2", 4, 10, 3, drop_path_prob=1.0)


GENOTYPES = {**PUBLISHED, **{f"random{i}": random_genotype(generator=torch.Generator().manual_seed(i)) for i in range(3)}}


@pytest.mark.parametrize("name", list(GENOTYPES))
def test_network_matches_the_reference_network(name):
    """Outputs, input gradients and every weight gradient against DARTS' NetworkCIFAR written out
    in rnas_lib.reference, in eval and train mode (float64), and with drop-path on the same draws."""
    torch.manual_seed(0)
    net = Network(GENOTYPES[name], 4, 3, 3, in_channels=1, mean=[0.4], std=[0.3]).double()
    ref = ReferenceNetwork(GENOTYPES[name], 4, 3, 3, in_channels=1, mean=[0.4], std=[0.3]).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    ref.load_from(net)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    for mode, drop in (("eval", 0.0), ("train", 0.0), ("train", 0.3)):
        results = []
        for model in (net, ref):
            getattr(model, mode)()
            model.drop_path_prob = drop
            xi = x.clone().requires_grad_()
            torch.manual_seed(1)  # the same drop-path draws
            out = model(xi)
            grads = torch.autograd.grad((out * torch.arange(1.0, 4.0, dtype=out.dtype)).sum(),
                                        [xi] + list(model.parameters()))
            results.append((out, grads))
        (out_n, grads_n), (out_r, grads_r) = results
        assert torch.allclose(out_n, out_r, atol=1e-10), (mode, drop)
        assert len(grads_n) == len(grads_r)
        for i, (a, b) in enumerate(zip(grads_n, grads_r)):
            assert torch.allclose(a, b, atol=1e-9), (mode, drop, i)
