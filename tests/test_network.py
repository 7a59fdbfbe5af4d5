import pytest
import torch

from rnas_lib.genotypes import PUBLISHED, random_genotype
from rnas_lib.network import Network, drop_path
from rnas_lib.ops import PRIMITIVES, FactorizedReduce, make_op


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
                  drop_path_prob=0.5).eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(net(x), net(x))


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="C must be a positive integer"):
        Network("DARTS_V2", 0, 10, 3)
    with pytest.raises(ValueError, match="drop_path_prob"):
        Network("DARTS_V2", 4, 10, 3, drop_path_prob=1.0)
