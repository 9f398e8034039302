"""ndsnn.ops.sparse_conv2d against F.conv2d(x, weight * mask): values and gradients, every geometry."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_kernels_ran, ops_called, require_kernel

import ndsnn
from ndsnn.ops import sparse_conv2d
from ndsnn.ops.kept_index import build_kept_index, cached_index, kept_index

# (C_in, C_out, kernel, stride, padding, dilation, groups)
GEOMETRIES = [
    (3, 5, 3, 1, 1, 1, 1),
    (4, 6, 3, 2, 0, 1, 1),
    (4, 4, 1, 1, 0, 1, 1),
    (4, 6, 5, 1, 2, 1, 2),
    (6, 6, 3, 2, 1, 2, 6),  # depthwise, strided, dilated
    (2, 3, 3, 1, 2, 1, 1),
    (5, 4, 5, 2, 2, 2, 1),
    (3, 4, 3, 1, 2, 2, 1),  # stride 1, dilated: the event-driven and shifted-plane CPU paths
    (4, 3, 2, 1, 0, 1, 1),  # even kernel
    (2, 3, 3, 3, 2, 2, 1),  # stride 3 (nine phases), padding wider than the dilated kernel's reach
    (3, 2, 1, 2, 2, 1, 1),  # strided 1x1 with padding: outputs that see only padding
]
SPARSITIES = [0.0, 0.5, 0.9, 0.99, 1.0]
SPARSE_OPS = ("sparse_conv2d_forward", "sparse_conv2d_grad_input", "sparse_conv2d_grad_weight")


def _compiled(device: torch.device) -> bool:
    """Requires the compiled kernel on this device: fails when it is missing (a skip only for a session
    run with NDSNN_KERNELS=off on purpose)."""
    require_kernel("sparse_conv2d_forward", device)
    return True


@pytest.fixture(autouse=True)
def _general_kernels(monkeypatch):
    """These tests are the general sparse kernels' (test_sparse_conv2d_tiled.py tests the tiled ones, which the
    op would otherwise pick on a GPU where they fit)."""
    monkeypatch.setattr(importlib.import_module("ndsnn.ops.sparse_conv2d"), "use_tiled", lambda *args: False)


def _case(geometry, sparsity, device, dtype=torch.float32, batch=2, size=(9, 7), binary=False, seed=0):
    """binary: spikes at a 15% rate; "sparse-real": real values at 20% of the positions; else dense normal."""
    c_in, c_out, k, stride, padding, dilation, groups = geometry
    g = torch.Generator().manual_seed(seed)
    if binary == "sparse-real":
        x = torch.randn(batch, c_in, *size, generator=g) * (torch.rand(batch, c_in, *size, generator=g) < 0.2)
        x = x.to(dtype)
    elif binary:
        x = (torch.rand(batch, c_in, *size, generator=g) < 0.15).to(dtype)
    else:
        x = torch.randn(batch, c_in, *size, generator=g).to(dtype)
    weight = torch.randn(c_out, c_in // groups, k, k, generator=g).to(dtype)
    mask = torch.rand(weight.shape, generator=g) >= sparsity
    bias = torch.randn(c_out, generator=g).to(dtype)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return [t.to(device) for t in (x, weight, mask, bias)], conv


def _both(x, weight, mask, bias, conv, **kwargs):
    """The compiled sparse kernel (wherever it exists) and the masked dense convolution."""
    kwargs.setdefault("implementation", "sparse")
    sparse = kwargs["implementation"] == "sparse"
    if sparse:
        _compiled(x.device)
    results = []
    for index, fn in enumerate((
        lambda xx, ww, bb: sparse_conv2d(xx, ww, mask, bb, **conv, **kwargs),
        lambda xx, ww, bb: F.conv2d(xx, ww * mask, bb, **conv),
    )):  # fmt: skip
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]

        def forward_backward(fn=fn, leaves=leaves):
            out = fn(*leaves)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
            return out, torch.autograd.grad(out, leaves, grad)

        result, called = ops_called(forward_backward)
        if index == 0 and sparse:  # the values compared are the compiled kernels' own
            assert_kernels_ran(called, *SPARSE_OPS)
        results.append(result)
    return results


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("binary", [False, True, "sparse-real"])
@pytest.mark.parametrize("batch", [2, 12])  # 12 >= every output row here: the batch-innermost CPU path
def test_matches_masked_dense_conv(device, geometry, sparsity, binary, batch):
    (x, weight, mask, bias), conv = _case(geometry, sparsity, device, binary=binary, batch=batch)
    (out, grads), (want, want_grads) = _both(x, weight, mask, bias, conv)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(grads[1][~mask]) == 0, "pruned weights must get no gradient"


@pytest.mark.parametrize("size,batch", [((1, 1), 1), ((5, 11), 1), ((16, 16), 3)])
def test_odd_sizes_and_batch_one(device, size, batch):
    geometry = (3, 4, 3, 1, 1, 1, 1)
    (x, weight, mask, bias), conv = _case(geometry, 0.7, device, batch=batch, size=size)
    (out, grads), (want, want_grads) = _both(x, weight, mask, bias, conv)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [2, 12])
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[1]])
def test_bfloat16(device, batch, binary, geometry):
    (x, weight, mask, bias), conv = _case(geometry, 0.8, device, dtype=torch.bfloat16, batch=batch, binary=binary)
    (out, grads), (want, want_grads) = _both(x, weight, mask, bias, conv)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want.float(), rtol=2e-2, atol=5e-2)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=1e-1)


@pytest.mark.parametrize("implementation", ["sparse", "dense"])
def test_dense_weight_grad_for_grow_steps(device, implementation):
    (x, weight, mask, bias), conv = _case(GEOMETRIES[3], 0.9, device)
    w = weight.clone().requires_grad_()
    out = sparse_conv2d(x, w, mask, bias, **conv, dense_weight_grad=True, implementation=implementation)
    torch.testing.assert_close(out, F.conv2d(x, weight * mask, bias, **conv), rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, w, grad_out)
    want = torch.nn.grad.conv2d_weight(x, w.shape, grad_out, **conv)
    torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(g[~mask]) > 0


def test_empty_batch_and_all_pruned(device):
    _compiled(device)
    (x, weight, mask, bias), conv = _case(GEOMETRIES[0], 0.5, device, batch=0)
    out = sparse_conv2d(x, weight, mask, bias, **conv, implementation="sparse")
    assert out.shape == F.conv2d(x, weight, bias, **conv).shape
    (x, weight, mask, bias), conv = _case(GEOMETRIES[0], 1.0, device)
    assert not mask.any()
    out = sparse_conv2d(x, weight, mask, bias, **conv, implementation="sparse")
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand_as(out))


def _sparse_only(mask, conv):
    return lambda a, w, b: sparse_conv2d(a, w, mask, b, **conv, implementation="sparse")


def test_gradcheck(device):
    _compiled(device)
    for geometry, batch in ((GEOMETRIES[1], 2), (GEOMETRIES[4], 2), (GEOMETRIES[4], 8)):
        (x, weight, mask, bias), conv = _case(geometry, 0.5, device, dtype=torch.float64, size=(6, 5), batch=batch)
        inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
        assert torch.autograd.gradcheck(_sparse_only(mask, conv), inputs)


def test_opcheck(device):
    _compiled(device)
    for geometry, sparsity in itertools.product(GEOMETRIES[:5], (0.5, 1.0)):
        (x, weight, mask, bias), conv = _case(geometry, sparsity, device, size=(6, 5))
        index = build_kept_index(mask, conv["groups"])
        args = (x.requires_grad_(), weight.requires_grad_(), bias, index.out_ptr, index.out_flat, index.in_ptr,
                index.in_flat, [conv["stride"]] * 2, [conv["padding"]] * 2, [conv["dilation"]] * 2, conv["groups"],
                False)  # fmt: skip
        torch.library.opcheck(torch.ops.ndsnn.sparse_conv2d_forward.default, args)


def test_index_groups_kept_weights():
    mask = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    mask[0, 1, 2, 0] = mask[3, 0, 0, 0] = mask[3, 1, 1, 1] = True
    index = build_kept_index(mask, groups=2)  # C_in = 4: outputs 0-1 read inputs 0-1, outputs 2-3 inputs 2-3
    assert index.out_ptr.tolist() == [0, 1, 1, 1, 3]
    assert index.out_flat.tolist() == [15, 54, 67]  # o * 18 + c * 9 + ky * 3 + kx
    assert index.in_ptr.tolist() == [0, 0, 1, 2, 3]
    assert index.in_flat.tolist() == [15, 54, 67]


def test_index_cache_follows_in_place_mask_changes():
    mask = torch.ones(2, 3, 3, 3, dtype=torch.bool)
    first = kept_index(mask, 1)
    assert kept_index(mask, 1) is first
    mask[0] = False
    second = kept_index(mask, 1)
    assert second is not first and second.kept == 27


def _untracked_writes():
    """Ways to change a mask that its version counter does not see."""

    def through_data(mask):
        mask.data[0] = ~mask.data[0]

    def through_numpy(mask):
        view = mask.numpy()
        view[1, 0] = ~view[1, 0]

    def swap_two(mask):  # the count of kept weights stays the same
        flat = mask.data.view(-1)
        kept, pruned = int(flat.nonzero()[0]), int((~flat).nonzero()[0])
        flat[kept], flat[pruned] = False, True

    return [through_data, through_numpy, swap_two]


@pytest.mark.parametrize("write", _untracked_writes(), ids=lambda f: f.__name__)
def test_the_op_follows_mask_changes_the_version_counter_misses(write):
    """The result is F.conv2d on weight * mask for the mask as it is now, however it was changed."""
    _compiled(torch.device("cpu"))
    (x, weight, mask, bias), conv = _case(GEOMETRIES[0], 0.5, torch.device("cpu"))
    first = sparse_conv2d(x, weight, mask, bias, **conv, implementation="sparse")
    torch.testing.assert_close(first, F.conv2d(x, weight * mask, bias, **conv))
    version = mask._version
    write(mask)
    assert mask._version == version  # the counter did not move
    again = sparse_conv2d(x, weight, mask, bias, **conv, implementation="sparse")
    torch.testing.assert_close(again, F.conv2d(x, weight * mask, bias, **conv))
    assert not torch.allclose(again, first)
    assert cached_index(mask).kept == int(mask.sum())


def test_the_module_follows_an_untracked_mask_change():
    _compiled(torch.device("cpu"))
    torch.manual_seed(0)
    conv = ndsnn.nn.SparseSpikingConv2d(4, 6, 3, padding=1)
    conv.implementation = "sparse"
    conv.set_mask(torch.rand(conv.weight.shape) < 0.3)
    x = torch.randn(2, 4, 5, 5)
    conv(x)
    with torch.no_grad():
        conv.weight.add_(1.0)  # pruned positions get values: only the mask decides
    conv.weight_mask.data.copy_(torch.rand(conv.weight.shape) < 0.3)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.weight_mask, conv.bias, padding=1))
    assert conv.density == int(conv.weight_mask.sum()) / conv.weight_mask.numel()


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(mask=torch.ones(5, 3, 3, 3)), "mask must be a bool tensor"),
        (dict(mask=torch.ones(5, 3, 3, 2, dtype=torch.bool)), "mask must be a bool tensor of weight's shape"),
        (dict(x=torch.randn(2, 4, 8, 8)), "x has 4 channels but weight expects"),
        (dict(x=torch.randn(3, 8, 8)), r"x must be a floating-point \[N, C, H, W\]"),
        (dict(x=torch.ones(2, 3, 8, 8, dtype=torch.int64)), r"x must be a floating-point \[N, C, H, W\]"),
        (dict(weight=torch.randn(5, 3, 3, 3, dtype=torch.float64)), "weight must be a"),
        (dict(bias=torch.randn(4)), r"bias must be a \[5\] tensor"),
        (dict(mask=torch.ones(5, 3, 3, 3, dtype=torch.bool, device="meta")), "mask is on meta but x is on cpu"),
    ],
)
def test_bad_arguments(change, match):
    args = dict(x=torch.randn(2, 3, 8, 8), weight=torch.randn(5, 3, 3, 3), bias=torch.randn(5))
    args["mask"] = torch.ones(5, 3, 3, 3, dtype=torch.bool)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        sparse_conv2d(args["x"], args["weight"], args["mask"], args["bias"])


def test_compiled_op_checks_its_index():
    _compiled(torch.device("cpu"))
    x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    bad = torch.tensor([0, 1, 2, 100])
    ptr = torch.tensor([0, 1, 2, 4])
    with pytest.raises(RuntimeError, match="kept-weight index does not match"):
        torch.ops.ndsnn.sparse_conv2d_forward(x, weight, None, ptr, bad, ptr, bad, [1, 1], [0, 0], [1, 1], 1, False)
    with pytest.raises(RuntimeError, match="out_ptr must have 4 entries"):
        torch.ops.ndsnn.sparse_conv2d_forward(x, weight, None, ptr[:2], bad, ptr, bad, [1, 1], [0, 0], [1, 1], 1, False)


def test_auto_picks_by_density(device, monkeypatch):
    """auto: the sparse kernel at or below the crossover density, dense above; same values either way."""
    _compiled(device)
    calls = []
    original = torch.ops.ndsnn.sparse_conv2d_forward
    monkeypatch.setattr(torch.ops.ndsnn, "sparse_conv2d_forward", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setenv("NDSNN_SPARSE_CONV_MAX_DENSITY", "0.3")
    for sparsity, sparse_expected in ((0.9, True), (0.2, False)):
        (x, weight, mask, bias), conv = _case(GEOMETRIES[0], sparsity, device)
        calls.clear()
        out = sparse_conv2d(x, weight, mask, bias, **conv)
        assert bool(calls) == sparse_expected
        torch.testing.assert_close(out, F.conv2d(x, weight * mask, bias, **conv), rtol=1e-5, atol=1e-5)


def test_unknown_implementation():
    with pytest.raises(ValueError, match="implementation must be one of auto, sparse, dense"):
        sparse_conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), torch.ones(1, 1, 1, 1, dtype=torch.bool),
                      implementation="fast")  # fmt: skip


def test_sparse_is_refused_where_no_kernel_runs():
    """implementation="sparse" asks for the compiled kernel: where there is none it says so, never runs dense."""
    x, weight = torch.randn(2, 3, 5, 5, device="meta"), torch.randn(4, 3, 3, 3, device="meta")
    mask = torch.ones(4, 3, 3, 3, dtype=torch.bool, device="meta")
    refused = "implementation='sparse': the compiled library has no meta kernel"
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=refused):
        sparse_conv2d(x, weight, mask, implementation="sparse")
    out = sparse_conv2d(x, weight, mask, implementation="auto")  # auto runs dense there
    assert out.shape == (2, 4, 3, 3)
