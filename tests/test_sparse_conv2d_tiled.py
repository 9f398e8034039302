"""The tile-resident sparse convolution kernels against F.conv2d(x, weight * mask): values and all gradients,
every geometry, tiles that cross the image's edges, many images per tile and one, every pruning level, spikes
and real inputs, dtypes, opcheck and gradcheck. On the CPU the ops run the CUDA kernels' per-thread code as an
emulation of every block (so the tile logic is tested without a GPU); on a GPU the same tests run the CUDA
kernels. smem_budget forces small tiles, so the plans that big layers get on a GPU are exercised on small
tensors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_kernels_ran, ops_called, require_kernel

import ndsnn
from ndsnn.ops import sparse_conv2d
from ndsnn.ops.kept_index import build_kept_index
from ndsnn.ops.sparse_conv2d_tiled import sparse_conv2d_tiled, tile_plans

# (C_in, C_out, kernel, stride, padding, dilation, groups), as in test_sparse_conv2d
GEOMETRIES = [
    (3, 5, 3, 1, 1, 1, 1),
    (4, 6, 3, 2, 0, 1, 1),
    (4, 4, 1, 1, 0, 1, 1),
    (4, 6, 5, 1, 2, 1, 2),
    (6, 6, 3, 2, 1, 2, 6),  # depthwise, strided, dilated
    (2, 3, 3, 1, 2, 1, 1),
    (5, 4, 5, 2, 2, 2, 1),
    (4, 3, 2, 1, 0, 1, 1),  # even kernel
    (2, 3, 3, 3, 2, 2, 1),  # stride 3: nine phases in the input gradient
    (3, 2, 1, 2, 2, 1, 1),  # strided 1x1 with padding: outputs that see only padding
]
TILED_OPS = ("sparse_conv2d_tiled_forward", "sparse_conv2d_tiled_grad_input", "sparse_conv2d_tiled_grad_weight")
BUDGETS = [0, 4096, 700]  # the default (every tile at its largest), small tiles, single pixels


def _case(geometry, sparsity, device, dtype=torch.float32, batch=3, size=(9, 7), spikes=False, seed=0):
    c_in, c_out, k, stride, padding, dilation, groups = geometry
    g = torch.Generator().manual_seed(seed)
    if spikes:
        x = (torch.rand(batch, c_in, *size, generator=g) < 0.15).double()
    else:
        x = torch.randn(batch, c_in, *size, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c_in // groups, k, k, generator=g, dtype=torch.float64)
    mask = torch.rand(weight.shape, generator=g) >= sparsity
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return [t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in (x, weight, mask, bias)], conv


def _plans_fit(x, weight, conv, budget) -> bool:
    plans = tile_plans(tuple(x.shape), tuple(weight.shape), (conv["stride"],) * 2, (conv["padding"],) * 2,
                       (conv["dilation"],) * 2, conv["groups"], x.element_size(), budget or 48 * 1024)  # fmt: skip
    return all(plan[0] > 0 for plan in plans)


def _tiled_and_reference(x, weight, mask, bias, conv, budget=0):
    """Output and gradients (x, weight, bias) of the tiled kernels and of F.conv2d on weight * mask."""
    require_kernel("sparse_conv2d_tiled_forward", x.device)
    results = []
    for tiled in (True, False):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]

        def run(leaves=leaves, tiled=tiled):
            if tiled:
                out = sparse_conv2d_tiled(leaves[0], leaves[1], mask, leaves[2], **conv, smem_budget=budget)
            else:
                out = F.conv2d(leaves[0], leaves[1] * mask, leaves[2], **conv)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
            return out, torch.autograd.grad(out, leaves, grad)

        result, called = ops_called(run)
        if tiled:
            assert_kernels_ran(called, *TILED_OPS)
        results.append(result)
    return results


def _assert_close(got, want, dtype):
    tolerance = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-2}[dtype]
    scale = max(1.0, float(want.detach().abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("batch,size", [(1, (9, 7)), (5, (9, 7)), (2, (1, 1)), (3, (16, 13))])
def test_matches_masked_dense_conv_every_tiling(device, geometry, budget, batch, size):
    (x, weight, mask, bias), conv = _case(geometry, 0.5, device, torch.float64, batch, size)
    try:
        F.conv2d(x, weight, None, **conv)
    except RuntimeError:
        pytest.skip("the kernel does not fit this input")
    if not _plans_fit(x, weight, conv, budget):
        pytest.skip("not one pixel fits this budget (the dispatcher would use the other kernels)")
    (out, grads), (want, want_grads) = _tiled_and_reference(x, weight, mask, bias, conv, budget)
    _assert_close(out, want, torch.float64)
    for got, expected in zip(grads, want_grads, strict=True):
        _assert_close(got, expected, torch.float64)
    assert torch.count_nonzero(grads[1][~mask]) == 0


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("spikes", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_pruning_levels_inputs_and_dtypes(device, sparsity, spikes, dtype):
    (x, weight, mask, bias), conv = _case(GEOMETRIES[0], sparsity, device, dtype, batch=4, spikes=spikes)
    (out, grads), (want, want_grads) = _tiled_and_reference(x, weight, mask, bias, conv)
    assert out.dtype == dtype
    _assert_close(out, want, dtype)
    for got, expected in zip(grads, want_grads, strict=True):
        _assert_close(got, expected, dtype)


def test_a_large_batch_spans_many_image_groups(device):
    (x, weight, mask, bias), conv = _case(GEOMETRIES[1], 0.9, device, torch.float32, batch=520, size=(5, 5),
                                          spikes=True)  # fmt: skip
    (out, grads), (want, want_grads) = _tiled_and_reference(x, weight, mask, bias, conv)
    _assert_close(out, want, torch.float32)
    for got, expected in zip(grads, want_grads, strict=True):
        _assert_close(got, expected, torch.float32)


def test_empty_batch(device):
    require_kernel("sparse_conv2d_tiled_forward", device)
    (x, weight, mask, bias), conv = _case(GEOMETRIES[0], 0.5, device, batch=0)
    out = sparse_conv2d_tiled(x, weight, mask, bias, **conv)
    assert out.shape == (0, 5, 9, 7)


def test_plans_respect_the_budget_and_the_lanes():
    from ndsnn.ops.sparse_conv2d_tiled import tile_plans as plans

    for (c_in, c_out, k, s, p, d, g), budget in itertools.product(GEOMETRIES, (48 * 1024, 4096, 1000)):
        x_shape, w_shape = (37, c_in, 21, 19), (c_out, c_in // g, k, k)
        for kind, (tile_h, tile_w, images, span_h, span_w, blocks) in enumerate(
            plans(x_shape, w_shape, (s, s), (p, p), (d, d), g, 4, budget)
        ):
            if tile_h == 0:
                continue
            per_image = (tile_h // s) * (tile_w // s) if kind == 1 else tile_h * tile_w
            assert images * per_image <= 128  # at most 4 items per lane
            staged = images * (c_out if kind == 1 else c_in) * span_h * span_w
            staged += images * c_out * tile_h * tile_w if kind == 2 else 0
            assert staged * 4 <= budget
            if kind == 1:
                assert tile_h % s == 0 and tile_w % s == 0
            assert blocks >= 1


def test_opcheck(device):
    require_kernel("sparse_conv2d_tiled_forward", device)
    for geometry, sparsity in itertools.product(GEOMETRIES[:5], (0.5, 1.0)):
        (x, weight, mask, bias), conv = _case(geometry, sparsity, device, size=(6, 5))
        index = build_kept_index(mask, conv["groups"])
        args = (x.requires_grad_(), weight.requires_grad_(), bias, index.out_ptr, index.out_flat, index.in_ptr,
                index.in_flat, [conv["stride"]] * 2, [conv["padding"]] * 2, [conv["dilation"]] * 2, conv["groups"],
                False, 2000)  # fmt: skip
        torch.library.opcheck(torch.ops.ndsnn.sparse_conv2d_tiled_forward.default, args)


def test_gradcheck(device):
    require_kernel("sparse_conv2d_tiled_forward", device)
    for geometry in (GEOMETRIES[1], GEOMETRIES[4], GEOMETRIES[8]):
        (x, weight, mask, bias), conv = _case(geometry, 0.5, device, torch.float64, batch=2, size=(6, 5))
        inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
        fn = lambda a, w, b, conv=conv, mask=mask: sparse_conv2d_tiled(a, w, mask, b, **conv, smem_budget=1500)  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs)


def test_a_layer_too_wide_for_one_pixel_is_a_clear_error():
    x, weight = torch.randn(1, 64, 5, 5), torch.randn(4, 64, 3, 3)
    with pytest.raises(RuntimeError, match="one pixel of one image needs more than the 1000 bytes"):
        sparse_conv2d_tiled(x, weight, torch.ones(weight.shape, dtype=torch.bool), smem_budget=1000)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_the_dispatcher_runs_the_tiled_kernels_on_a_gpu():
    (x, weight, mask, bias), conv = _case(GEOMETRIES[0], 0.9, torch.device("cuda"))
    x, weight = x.requires_grad_(), weight.requires_grad_()
    _, called = ops_called(lambda: sparse_conv2d(x, weight, mask, bias, **conv, implementation="sparse").sum()
                           .backward())  # fmt: skip
    assert_kernels_ran(called, *TILED_OPS)
    layer = ndsnn.nn.SparseSpikingConv2d(3, 5, 3, padding=1).cuda()
    layer.implementation = "sparse"
    _, called = ops_called(lambda: layer(x.detach()).sum().backward())
    assert_kernels_ran(called, *TILED_OPS)
