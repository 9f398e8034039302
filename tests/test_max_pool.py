"""ndsnn.ops.max_pool_window and ndsnn.nn.MaxPool2d against F.max_pool2d: values, the place that takes the
gradient (ties, NaN, -inf), shapes with odd sizes and row tails, dtypes, strides, empty batches, opcheck,
gradcheck, torch.compile, and the configurations that fall back to nn.MaxPool2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_kernels_ran, ops_called, require_kernel
from torch import nn

from ndsnn.nn import MaxPool2d
from ndsnn.ops import max_pool_window

OPS = ("max_pool_window_forward", "max_pool_window_backward")


@pytest.fixture(autouse=True)
def _kernel():
    require_kernel(OPS[0], torch.device("cpu"))


def _compare(x: torch.Tensor, window: int, atol: float = 0.0) -> None:
    """Forward and backward of the kernel against F.max_pool2d on the same input and output gradient."""
    mine_x = x.detach().clone().requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    expected = F.max_pool2d(ref_x, window)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype)

    def run():
        out = max_pool_window(mine_x, window)
        (grad_x,) = torch.autograd.grad(out, mine_x, grad)
        return out, grad_x

    (out, grad_x), called = ops_called(run)
    assert_kernels_ran(called, *OPS)
    (expected_grad,) = torch.autograd.grad(expected, ref_x, grad)
    torch.testing.assert_close(out, expected, atol=atol, rtol=0, equal_nan=True)
    torch.testing.assert_close(grad_x, expected_grad, atol=atol, rtol=0, equal_nan=True)


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 8, 8), (3, 5, 9, 7), (1, 2, 4, 30), (2, 2, 6, 34), (1, 1, 2, 2), (4, 16, 28, 28), (4, 8, 14, 14)],
)
@pytest.mark.parametrize("binary", [False, True], ids=["real", "spikes"])
def test_2x2_matches_max_pool2d(shape, binary):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(shape, generator=g) < 0.2).float() if binary else torch.randn(shape, generator=g)
    _compare(x, 2)


@pytest.mark.parametrize(
    "window,shape", [(1, (2, 3, 5, 4)), (3, (2, 2, 10, 11)), (4, (1, 3, 9, 17)), (16, (1, 1, 16, 33))]
)
def test_other_windows_match_max_pool2d(window, shape):
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    _compare(x, window)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("window", [2, 3])
def test_dtypes(dtype, window):
    x = torch.randn(2, 4, 13, 19, generator=torch.Generator().manual_seed(3)).to(dtype)
    _compare(x, window)


def test_ties_give_the_gradient_to_the_first_place_in_row_major_order():
    """All-equal windows (silent neurons) and ties between the rows: PyTorch's CPU rule, exactly."""
    x = torch.zeros(1, 1, 4, 36)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0  # a tie of the top-right and bottom-left places in window 0
    x[0, 0, 2, 3] = x[0, 0, 3, 2] = 1.0  # window 1 of the second window row: top-right and bottom-left again
    _compare(x, 2)
    _compare(torch.ones(2, 3, 6, 18), 2)


def test_nan_and_infinities_follow_max_pool2d():
    x = torch.randn(2, 3, 8, 40, generator=torch.Generator().manual_seed(4))
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 1, 1] = float("nan")  # two NaNs in one window: PyTorch takes the last one
    x[0, 1, 2:4, 2:4] = float("-inf")  # a window of -inf: its first place
    x[1, 2, 5, 17] = float("inf")
    x[1, 2, 4, 16] = float("nan")
    _compare(x, 2)
    _compare(x, 3)


def test_strided_and_channels_last_input():
    base = torch.randn(3, 4, 12, 20, generator=torch.Generator().manual_seed(5))
    _compare(base.transpose(2, 3), 2)
    _compare(base.contiguous(memory_format=torch.channels_last), 2)
    _compare(base[:, ::2], 2)


def test_empty_batch_and_channels():
    for shape in [(0, 3, 8, 8), (2, 0, 8, 8)]:
        x = torch.randn(shape, requires_grad=True)
        out = max_pool_window(x, 2)
        assert out.shape == (*shape[:2], 4, 4)
        out.sum().backward()
        assert x.grad.shape == x.shape


def test_the_window_must_fit():
    with pytest.raises(RuntimeError, match="window does not fit"):
        torch.ops.ndsnn.max_pool_window_forward(torch.randn(1, 1, 1, 8), 2)
    with pytest.raises(RuntimeError, match="window must be in"):
        torch.ops.ndsnn.max_pool_window_forward(torch.randn(1, 1, 40, 40), 17)
    # the op falls back to F.max_pool2d for what the kernel does not take, with max_pool2d's own error
    with pytest.raises(RuntimeError):
        max_pool_window(torch.randn(1, 1, 1, 8), 2)


def test_opcheck_and_gradcheck():
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.ndsnn.max_pool_window_forward.default, (x, 2))
    torch.library.opcheck(torch.ops.ndsnn.max_pool_window_forward.default, (x, 3))
    index = torch.ops.ndsnn.max_pool_window_forward(x.detach(), 2)[1]
    grad = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.ndsnn.max_pool_window_backward.default, (grad, index, [2, 3, 7, 10], 2))
    assert torch.autograd.gradcheck(lambda v: max_pool_window(v, 2), (x,))


def test_double_backward_is_refused():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(max_pool_window(x, 2).pow(2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad.sum().backward()


def test_module_is_a_drop_in_max_pool():
    x = (torch.rand(6, 8, 10, 10, generator=torch.Generator().manual_seed(6)) < 0.3).float().requires_grad_()
    module, reference = MaxPool2d(2), nn.MaxPool2d(2)
    assert isinstance(module, nn.MaxPool2d)
    out, called = ops_called(lambda: module(x))
    assert_kernels_ran(called, OPS[0])
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "options",
    [
        dict(kernel_size=3, stride=2),
        dict(kernel_size=2, padding=1),
        dict(kernel_size=2, ceil_mode=True),
        dict(kernel_size=2, dilation=2),
        dict(kernel_size=(2, 3)),
    ],  # fmt: skip
)
def test_module_falls_back_where_the_kernel_does_not_apply(options):
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    module, reference = MaxPool2d(**options), nn.MaxPool2d(**options)
    out, called = ops_called(lambda: module(x))
    assert not called & set(OPS)
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
    returned = MaxPool2d(2, return_indices=True)(x)
    assert isinstance(returned, tuple) and len(returned) == 2


def test_module_compiles_fullgraph_and_matches_eager():
    module = MaxPool2d(2)
    x = torch.randn(4, 3, 12, 12, requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    eager_out = module(x)
    compiled_out = compiled(x)
    torch.testing.assert_close(compiled_out, eager_out, rtol=0, atol=0)
    (eager_grad,) = torch.autograd.grad(eager_out.sum(), x)
    (compiled_grad,) = torch.autograd.grad(compiled_out.sum(), x)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=0, atol=0)
