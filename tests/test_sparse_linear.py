"""ndsnn.ops.sparse_linear against F.linear(x, weight * mask): values and gradients, shapes, dtypes, errors."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_kernels_ran, ops_called, require_kernel

from ndsnn.ops import sparse_linear
from ndsnn.ops.kept_index import build_kept_index, cached_index

# The CPU has sparse linear kernels of their own; CUDA runs a linear layer as a 1x1 convolution.
KERNELS = {
    "cpu": ("sparse_linear_forward", "sparse_linear_grad_input", "sparse_linear_grad_weight"),
    "cuda": ("sparse_conv2d_forward", "sparse_conv2d_grad_input", "sparse_conv2d_grad_weight"),
}


def _compiled(device: torch.device) -> bool:
    """Requires the compiled kernel on this device (fails when missing; see kernel_checks)."""
    require_kernel(KERNELS[device.type][0], device)
    return True


@pytest.fixture(autouse=True)
def _general_kernels(monkeypatch):
    """These tests are the general sparse kernels' (test_sparse_conv2d_tiled.py tests the tiled ones, which the
    op would otherwise pick on a GPU where they fit)."""
    monkeypatch.setattr(importlib.import_module("ndsnn.ops.sparse_conv2d"), "use_tiled", lambda *args: False)


def _case(shape, in_features, out_features, sparsity, device, dtype=torch.float32, binary=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    full = (*shape, in_features)
    x = (torch.rand(full, generator=g) < 0.15).float() if binary else torch.randn(full, generator=g)
    weight = torch.randn(out_features, in_features, generator=g)
    mask = torch.rand(weight.shape, generator=g) >= sparsity
    bias = torch.randn(out_features, generator=g)
    tensors = (x, weight, mask, bias)
    return [t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device) for t in tensors]


def _grads(fn, x, weight, bias):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = fn(*leaves)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    return out, torch.autograd.grad(out, leaves, grad)


def _sparse_grads(mask, x, weight, bias):
    """The compiled kernels' output and gradients (asserting that they, not a fallback, produced them)."""
    _compiled(x.device)
    result, called = ops_called(
        lambda: _grads(lambda a, w, b: sparse_linear(a, w, mask, b, implementation="sparse"), x, weight, bias)
    )
    assert_kernels_ran(called, *KERNELS[x.device.type])
    return result


@pytest.mark.parametrize("shape", [(1,), (3,), (12,), (4, 5), ()])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("binary", [False, True])
def test_matches_masked_dense_linear(device, shape, sparsity, binary):
    x, weight, mask, bias = _case(shape, 37, 11, sparsity, device, binary=binary)
    out, grads = _sparse_grads(mask, x, weight, bias)
    want, want_grads = _grads(lambda a, w, b: F.linear(a, w * mask, b), x, weight, bias)
    assert out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(grads[1][~mask]) == 0


@pytest.mark.parametrize("batch", [1, 33, 700])
@pytest.mark.parametrize("sparsity", [0.995, 0.97, 0.6])
@pytest.mark.parametrize("binary", [False, True])
def test_every_cpu_path_in_float64(batch, sparsity, binary):
    """Few kept weights per input (gathered forward and weight gradient, the latter over several chunks of
    samples at batch 700) and many (event forward for spikes, transposed dot products): all equal
    F.linear in float64, and the weight gradient is the same bits with one thread as with two."""
    device = torch.device("cpu")
    x, weight, mask, bias = _case((batch,), 300, 64, sparsity, device, dtype=torch.float64, binary=binary)
    out, grads = _sparse_grads(mask, x, weight, bias)
    want, want_grads = _grads(lambda a, w, b: F.linear(a, w * mask, b), x, weight, bias)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, single = _sparse_grads(mask, x, weight, bias)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[1], grads[1])


@pytest.mark.parametrize("binary", [False, True])
def test_bfloat16(device, binary):
    x, weight, mask, bias = _case((16,), 40, 9, 0.8, device, dtype=torch.bfloat16, binary=binary)
    out, grads = _sparse_grads(mask, x, weight, bias)
    want, want_grads = _grads(lambda a, w, b: F.linear(a.float(), (w * mask).float(), b.float()), x, weight, bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=5e-2)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=1e-1)


@pytest.mark.parametrize("implementation", ["sparse", "dense"])
def test_dense_weight_grad(device, implementation):
    x, weight, mask, bias = _case((6,), 20, 7, 0.9, device)
    w = weight.clone().requires_grad_()
    out = sparse_linear(x, w, mask, bias, dense_weight_grad=True, implementation=implementation)
    torch.testing.assert_close(out, F.linear(x, weight * mask, bias), rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, w, grad_out)
    torch.testing.assert_close(g, grad_out.t() @ x, rtol=1e-4, atol=1e-4)


def test_gradcheck(device):
    _compiled(device)
    x, weight, mask, bias = _case((3, 4), 6, 5, 0.5, device, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda a, w, b: sparse_linear(a, w, mask, b, implementation="sparse"), inputs)


def test_opcheck_on_linear_shapes(device):
    _compiled(device)
    x, weight, mask, bias = _case((9,), 13, 6, 0.7, device)
    index = build_kept_index(mask, 1)
    args = (x.view(9, 13, 1, 1).requires_grad_(), weight.view(6, 13, 1, 1).requires_grad_(), bias, index.out_ptr,
            index.out_flat, index.in_ptr, index.in_flat, [1, 1], [0, 0], [1, 1], 1, False)  # fmt: skip
    torch.library.opcheck(torch.ops.ndsnn.sparse_conv2d_forward.default, args)
    if device.type == "cpu":  # the linear layer's own kernels, spikes and real inputs
        for x_in, kind in ((x, 2), ((x > 0.5).to(x.dtype), 1)):
            args = (x_in.requires_grad_(), weight.clone().requires_grad_(), bias, index.out_ptr, index.out_flat,
                    index.in_ptr, index.in_flat, False, kind)  # fmt: skip
            torch.library.opcheck(torch.ops.ndsnn.sparse_linear_forward.default, args)


def test_index_is_cached_on_the_2d_mask(device):
    _compiled(device)
    x, weight, mask, bias = _case((4,), 8, 3, 0.5, device)
    sparse_linear(x, weight, mask, bias, implementation="sparse")
    cached = cached_index(mask)
    sparse_linear(x, weight, mask, bias, implementation="sparse")
    assert cached is not None and cached_index(mask) is cached


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(x=torch.randn(2, 5)), r"x must be a floating-point tensor of shape \[..., 4\]"),
        (dict(weight=torch.randn(3, 4, 1)), r"weight must be an \[out_features, in_features\] tensor"),
        (dict(mask=torch.ones(3, 4)), "mask must be a bool tensor"),
        (dict(mask=torch.ones(4, 3, dtype=torch.bool)), "mask must be a bool tensor of weight's shape"),
        (dict(weight=torch.randn(3, 4, dtype=torch.float64)), "weight must have x's dtype"),
        (dict(bias=torch.randn(4)), r"bias must be a \[3\] tensor"),
        (dict(mask=torch.ones(3, 4, dtype=torch.bool, device="meta")), "mask is on meta but x is on cpu"),
    ],
)
def test_bad_arguments(change, match):
    args = dict(x=torch.randn(2, 4), weight=torch.randn(3, 4), mask=torch.ones(3, 4, dtype=torch.bool))
    args["bias"] = torch.randn(3)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        sparse_linear(args["x"], args["weight"], args["mask"], args["bias"])
