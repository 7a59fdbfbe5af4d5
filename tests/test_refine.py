"""Full CROWN's intermediate refinement (certify.refine): its backward rows chunked to a memory budget
give the bounds and linear functions of one pass over all rows."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rnas_lib.certify import refine
from rnas_lib.certify.backward import lower
from rnas_lib.certify.certificates import bound_state
from rnas_lib.certify.settings import Settings
from test_bounds import ALL_OPS, derived  # the bound tests' derived networks


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5)).double().eval()


@pytest.mark.parametrize("images", [1, 2])
@pytest.mark.parametrize("rows_per_chunk", [1, 3])
def test_chunked_rows_give_the_bounds_of_one_pass(monkeypatch, images, rows_per_chunk):
    """With ROW_BUDGET cut to 1 or 3 rows of the widest node per chunk (two images: rows padded to the
    larger count), every refined node's bounds and linear functions equal those of one chunk."""
    net = _net()
    x = torch.rand(images, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    widest = 4 * 8 * 8  # the first convolution's output, the widest node
    results = {}
    for budget in (2**40, rows_per_chunk * images * widest * 8):
        monkeypatch.setattr(refine, "ROW_BUDGET", budget)
        functions = {}
        real = refine.crown_bounds

        def spy(state, z, need_low, need_up, linear=False):
            out = real(state, z, need_low, need_up, True)
            functions[z] = out[2]
            return out if linear else (*out[:2], None)

        monkeypatch.setattr(refine, "crown_bounds", spy)
        state, _ = bound_state(net, x, 0.05, Settings(norm="inf", method="crown"))
        monkeypatch.setattr(refine, "crown_bounds", real)
        results[budget] = state.pre, functions
    (pre_one, lin_one), (pre_chunked, lin_chunked) = results.values()
    assert lin_one and any(int((rows >= 0).sum()) > rows_per_chunk for rows, _, _ in lin_one.values())
    for z in pre_one:
        for a, b in zip(pre_one[z], pre_chunked[z]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for z, (rows, coef, offset) in lin_one.items():
        rows_c, coef_c, offset_c = lin_chunked[z]
        assert torch.equal(rows, rows_c)
        torch.testing.assert_close(coef, coef_c, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(offset, offset_c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_constant_background_gives_bounds_that_do_not_depend_on_the_chunking(monkeypatch, seed):
    """On an image that is black but for a patch (MNIST's background), max-pool inputs whose bounds are
    equal in exact arithmetic come out a few ulps apart, by an amount that depends on the chunking of
    the rows and on their windows. The relaxation must not follow those ulps (the max pool's choice
    of j broke such ties by round-off and moved these output bounds by 0.01): one pass over all rows on
    the whole map and 3 rows per chunk on their windows give the same bounds."""
    net = derived(seed, ALL_OPS).double().eval()
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[..., 4:8, 3:8] = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    results = []
    for budget, least_pixels in ((2**40, 10**9), (3 * 8 * 12 * 12 * 8, 1)):  # 3 rows of the widest node
        monkeypatch.setattr(refine, "ROW_BUDGET", budget)
        monkeypatch.setattr(refine, "LOCAL_MIN_PIXELS", least_pixels)
        with torch.no_grad():
            state, _ = bound_state(net, x, 0.02, Settings(norm="inf", method="crown"))
            K = state.g.shape(state.g.output)[0]
            eye = torch.eye(K, dtype=torch.float64)
            results.append((state.pre, lower(state, state.g.output, torch.cat([eye, -eye]).unsqueeze(0))))
    (pre_one, out_one), (pre_rows, out_rows) = results
    for z in pre_one:
        for a, b in zip(pre_one[z], pre_rows[z]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_one, out_rows, rtol=1e-12, atol=1e-12)
