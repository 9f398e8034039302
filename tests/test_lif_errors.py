"""Bad input to the LIF op and module: a clear error naming the argument, never a crash or a wrong answer."""

from __future__ import annotations

import pytest
import torch

import ndsnn
from ndsnn.ops import lif

X = torch.randn(4, 2, 3, 5)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x_seq=[1.0, 2.0]), TypeError, "x_seq must be a torch.Tensor"),
        (dict(x_seq=torch.ones(4, 3, dtype=torch.int64)), TypeError, "x_seq must be a floating-point"),
        (dict(x_seq=torch.ones(5)), ValueError, r"x_seq must have shape \[T, N, ...\]"),
        (dict(tau=1.0), ValueError, "tau must be > 1"),
        (dict(tau=0.5, decay_input=False), ValueError, "tau must be > 1"),
        (dict(tau=torch.tensor([2.0, 0.9, 3.0])), ValueError, "tau must be > 1"),
        (dict(tau="2"), TypeError, "tau must be a number or a floating-point tensor"),
        (dict(tau=torch.tensor([2, 3, 4])), TypeError, "tau must be a floating-point tensor"),
        (dict(v_threshold=torch.ones(4)), ValueError, r"v_threshold must have one element or shape \[C\] = \[3\]"),
        (dict(v_threshold=torch.ones(3, 1)), ValueError, "v_threshold must have one element or shape"),
        (dict(x_seq=torch.randn(4, 3), v_threshold=torch.ones(3)), ValueError, "per-channel v_threshold needs"),
        (dict(v_threshold=torch.ones(3, device="meta")), ValueError, "v_threshold is on meta but x_seq is on cpu"),
        (dict(v_reset=torch.tensor(0.0)), TypeError, "v_reset must be a number"),
        (dict(v_reset=True), TypeError, "v_reset must be a number"),
        (dict(surrogate="relu"), ValueError, "surrogate must be one of atan, sigmoid"),
        (dict(alpha=0.0), ValueError, "alpha must be a positive number"),
        (dict(alpha=True), ValueError, "alpha must be a positive number"),
        (dict(tau=torch.empty(0)), ValueError, "tau must have one element or one per channel"),
        (dict(saved_dtype=torch.float64), ValueError, "saved_dtype must be None"),
        (dict(x_seq=X.bfloat16(), saved_dtype=torch.float16), ValueError, "saved_dtype must be None"),
        (dict(v_threshold=float("nan")), ValueError, "v_threshold must be a finite number, got nan"),
        (dict(v_threshold=float("inf")), ValueError, "v_threshold must be a finite number, got inf"),
        (dict(tau=float("inf")), ValueError, "tau must be a finite number, got inf"),
        (dict(v_reset=float("nan")), ValueError, "v_reset must be a finite number"),
        (dict(alpha=float("inf")), ValueError, "alpha must be a positive number"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"x_seq": X, **kwargs}
    with pytest.raises(error, match=match):
        lif(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cpu_cuda_mix():
    with pytest.raises(ValueError, match="tau is on cpu but x_seq is on cuda"):
        lif(X.cuda(), tau=torch.tensor(2.0))


def test_compiled_op_checks_its_arguments():
    """The C++ op checks too, for callers that reach torch.ops.ndsnn directly."""
    if not ndsnn.kernel_status().loaded:
        pytest.skip("no compiled kernels")
    op = torch.ops.ndsnn.lif_forward
    with pytest.raises(RuntimeError, match="x_seq must have shape"):
        op(torch.ones(3), None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0, None)
    with pytest.raises(RuntimeError, match="v_threshold must have one element or shape"):
        op(X, None, torch.ones(4), 2.0, 1.0, 0.0, True, False, "atan", 2.0, None)
    with pytest.raises(RuntimeError, match="surrogate must be one of"):
        op(X, None, None, 2.0, 1.0, 0.0, True, False, "relu", 2.0, None)
    with pytest.raises(RuntimeError, match="v_threshold must have at least one element"):
        op(X, None, torch.empty(0), 2.0, 1.0, 0.0, True, False, "atan", 2.0, None)
    with pytest.raises(RuntimeError, match="tau must be > 1"):
        op(X, None, None, 0.0, 1.0, 0.0, True, False, "atan", 2.0, None)
    with pytest.raises(RuntimeError, match="alpha must be positive"):
        op(X, None, None, 2.0, 1.0, 0.0, True, False, "atan", -1.0, None)
    with pytest.raises(RuntimeError, match="saved_dtype may be float16 or bfloat16 only"):
        op(X.double(), None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0, torch.float16)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(tau=1.0), "tau must be > 1"),
        (dict(surrogate="nope"), "surrogate must be one of"),
        (dict(num_channels=0), "num_channels must be a positive int"),
        (dict(v_reset="zero"), "v_reset must be a number"),
        (dict(saved_dtype=torch.float64), "saved_dtype must be None"),
    ],
)
def test_module_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ndsnn.nn.LIF(**kwargs)


def test_module_channel_mismatch():
    layer = ndsnn.nn.LIF(learnable_threshold=True, num_channels=4)
    with pytest.raises(ValueError, match=r"shape \[C\] = \[3\]"):
        layer(X)


@pytest.mark.parametrize("kwargs", [dict(v_threshold=float("nan")), dict(v_threshold=float("-inf")),
                                    dict(tau=float("nan")), dict(v_reset=float("inf"))])  # fmt: skip
def test_the_module_refuses_non_finite_settings(kwargs):
    with pytest.raises(ValueError, match="must be a finite number"):
        ndsnn.nn.LIF(**kwargs)
