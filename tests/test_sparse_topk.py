"""The grow step's all-layer top-k against the per-layer torch.topk loop (torch and Triton paths)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ndsnn.sparse.topk import grow_topk, grow_topk_reference

SHAPES = [(64, 3, 3, 3), (128, 64, 3, 3), (10, 512), (5,), (7, 7)]


def _case(seed: int, candidate_rate: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    scores = [torch.randn(s, generator=g) for s in SHAPES]
    candidates = [torch.rand(s, generator=g) < candidate_rate for s in SHAPES]
    candidates[-1][:] = False  # a layer with nothing to grow into
    return scores, candidates


@pytest.mark.parametrize("counts", [[17, 500, 0, 10, 3], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [10**6] * 5])
def test_torch_radix_select_equals_the_topk_loop(counts):
    scores, candidates = _case(0)
    got = grow_topk(scores, candidates, counts, implementation="torch")
    want = grow_topk_reference(scores, candidates, counts)
    for g, w, c, k in zip(got, want, candidates, counts, strict=True):
        assert torch.equal(g, w)
        assert int(g.sum()) == min(k, int(c.sum()))
        assert not (g & ~c).any()


def test_ties_give_exact_counts_of_the_largest():
    scores = [torch.randint(0, 4, s).float() for s in SHAPES]  # many equal scores
    candidates = [torch.rand(s) < 0.5 for s in SHAPES]
    counts = [20, 300, 7, 2, 0]
    for got, s, c, k in zip(grow_topk(scores, candidates, counts, "torch"), scores, candidates, counts, strict=True):
        assert int(got.sum()) == min(k, int(c.sum()))
        rest = c & ~got
        if got.any() and rest.any():
            assert s[got].min() >= s[rest].max()


def test_bad_arguments():
    scores, candidates = _case(1)
    with pytest.raises(ValueError, match="one entry per layer"):
        grow_topk(scores, candidates, [1])
    with pytest.raises(ValueError, match=r"counts\[0\] must be a non-negative integer"):
        grow_topk(scores, candidates, [-1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"candidates\[1\] must be a bool tensor"):
        grow_topk(scores, [candidates[0], candidates[1].float(), *candidates[2:]], [1] * 5)
    with pytest.raises(ValueError, match="implementation must be one of"):
        grow_topk(scores, candidates, [1] * 5, implementation="cub")


def test_triton_kernel_under_the_interpreter(tmp_path):
    """The Triton histogram kernel, run on CPU by Triton's interpreter (set before Triton is imported)."""
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import torch
        from ndsnn.sparse.topk import grow_topk, grow_topk_reference
        g = torch.Generator().manual_seed(3)
        shapes = [(64, 3, 3, 3), (128, 64, 3, 3), (10, 512), (5,)]
        scores = [torch.randn(s, generator=g) for s in shapes]
        candidates = [torch.rand(s, generator=g) < 0.7 for s in shapes]
        counts = [17, 500, 0, 10]
        got = grow_topk(scores, candidates, counts, implementation="triton")
        want = grow_topk_reference(scores, candidates, counts)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), "triton differs from torch.topk"
        print("ok")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_triton_requested_without_it_is_a_clear_error(monkeypatch):
    from ndsnn.sparse import topk

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    scores, candidates = _case(2)
    with pytest.raises(RuntimeError, match="implementation='triton' needs Triton and a CUDA device"):
        topk.grow_topk(scores, candidates, [1] * 5, implementation="triton")


def test_auto_is_the_topk_loop(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    scores, candidates = _case(4)
    counts = [5, 50, 3, 1, 0]
    got, want = grow_topk(scores, candidates, counts), grow_topk_reference(scores, candidates, counts)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_triton_kernel_on_the_gpu():
    pytest.importorskip("triton")
    scores, candidates = _case(5)
    scores = [s.cuda() for s in scores]
    candidates = [c.cuda() for c in candidates]
    counts = [17, 500, 0, 10, 3]
    got = grow_topk(scores, candidates, counts, implementation="triton")
    want = grow_topk_reference(scores, candidates, counts)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
