"""The local backward pass (``rnas_lib.certify.local``): full CROWN's rows carried on the window of
their receptive field give the linear functions of the dense pass, on every primitive."""
from __future__ import annotations

import math

import pytest
import torch

from rnas_lib.certify.backward import backward
from rnas_lib.certify.certificates import bound_state
from rnas_lib.certify.local import local_backward
from rnas_lib.certify.primitives.base import crop, cut
from rnas_lib.certify.refine import row_order, unit_rows
from rnas_lib.certify.settings import Settings
from test_bounds import ALL_OPS, derived, supernet


@pytest.mark.parametrize("make, size, batch", [(lambda: derived(3, ALL_OPS), 12, 1), (lambda: derived(4), 12, 2),
                                               (lambda: supernet(5, C=2, steps=2, partial_channels=2), 8, 2),
                                               (lambda: supernet(6, C=2, steps=3), 8, 1)])
def test_local_pass_equals_the_dense_pass(make, size, batch):
    """For rows of every ReLU / max-pool input node — one pixel at a corner, a window inside the map,
    the whole map — the local pass's (Λ, β) equal those of ``backward.backward`` on the same rows
    padded to the whole map (float64; on derived networks and supernets, one image and two; the
    windows grow past the map's edges)."""
    net = make().double().eval()
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    state, _ = bound_state(net, x, 0.05, Settings(norm="inf", method="crown"))
    g = torch.Generator().manual_seed(2)
    checked = 0
    for z in state.consumers:
        C, H, W = g_shape = state.g.shape(z)
        for top, left, h, w in ((0, 0, 1, 1), (H // 3, W // 4, max(1, H // 3), max(1, W // 2)), (0, 0, H, W)):
            A = torch.zeros(batch, 5, *g_shape, dtype=torch.float64)
            crop(A, (top, left), (h, w)).copy_(torch.randn(batch, 5, C, h, w, generator=g, dtype=torch.float64))
            coef, offset = backward(state, z, A)
            local_A, at = cut(crop(A, (top, left), (h, w)), (top, left), (H, W))
            lc, lo = local_backward(state, z, local_A.contiguous(), at)
            torch.testing.assert_close(lc, coef, rtol=0, atol=1e-10)
            torch.testing.assert_close(lo, offset, rtol=0, atol=1e-10)
            checked += 1
    assert checked >= 3 * 6


def test_row_order_puts_the_wanted_rows_first_grouped_by_pixel():
    """Every wanted row once, before the others, and rows of one pixel (both bounds, every channel) together."""
    shape = (3, 6, 5)
    N = math.prod(shape)
    wanted = torch.rand(2, 2 * N, generator=torch.Generator().manual_seed(0)) < 0.4
    order = row_order(wanted, shape)
    for b in range(2):
        k = int(wanted[b].sum())
        assert set(order[b, :k].tolist()) == set(wanted[b].nonzero().squeeze(1).tolist())
        assert sorted(order[b].tolist()) == list(range(2 * N))
        pixels = (order[b, :k] % N) % (6 * 5)
        runs = (pixels[1:] != pixels[:-1]).sum() + 1
        assert int(runs) == len(set(pixels.tolist()))  # each pixel's rows are consecutive


def test_unit_rows_crop_names_the_same_rows_as_the_dense_rows():
    """The crop of ``unit_rows`` padded to the whole map is the dense one-hot rows (padding rows zero)."""
    shape = (2, 7, 7)
    neuron = torch.tensor([[30, 31, 38, 5], [31, 32, 0, 0]])
    ok = torch.tensor([[True, True, True, False], [True, True, False, False]])
    sign = torch.tensor([[1.0, -1.0, 1.0, 0.0], [-1.0, 1.0, 0.0, 0.0]])
    A, at = unit_rows(neuron, ok, sign, shape)
    assert at is not None and A.shape[-2:] != (7, 7)
    dense = torch.zeros(2, 4, 2 * 7 * 7)
    dense.scatter_(2, neuron.unsqueeze(2), sign.unsqueeze(2))
    full = torch.zeros(2, 4, *shape)
    crop(full, at, A.shape[-2:]).copy_(A)
    torch.testing.assert_close(full, dense.view(2, 4, *shape), rtol=0, atol=0)
