# ruff: noqa: E741  (I and O are the input and output sizes of the method's notation)
"""The training rollout: fused CPU forward and backward against the torch autograd loop."""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from schurfast import _core
from schurfast._seed_rollout import seed_rollout, seed_rollout_loop

# the compiled kernels, whichever path the default would take on this CPU
fused_rollout = functools.partial(seed_rollout, fused=True)

# S, B, L, H, I, O, bias: odd sizes that leave partial SIMD panels and micro-kernel rows
SHAPES = [
    (1, 1, 1, 1, 1, 1, False),
    (3, 7, 5, 13, 2, 3, True),
    (2, 19, 11, 64, 1, 1, False),
    (1, 13, 9, 33, 4, 8, True),
    (2, 5, 3, 70, 3, 5, True),
]


def _problem(S, B, L, H, I, O, bias, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)

    return [
        randn(S, H, H, scale=1.3 / H**0.5),
        randn(S, H, I),
        randn(S, O, H),
        randn(S, B, L, I),
        randn(S, H) if bias else None,
        randn(S, O) if bias else None,
    ]


def _value_and_grads(fn, args, grad_y):
    args = [None if a is None else a.detach().clone().requires_grad_() for a in args]
    y = fn(*args)
    grads = torch.autograd.grad((y * grad_y).sum(), [a for a in args if a is not None])
    return [y.detach(), *grads]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_fused_forward_and_gradients_match_autograd_loop(shape, dtype, rtol):
    args = _problem(*shape, dtype)
    S, B, L, _, _, O, _ = shape
    grad_y = torch.randn(S, B, L, O, generator=torch.Generator().manual_seed(1)).to(dtype)

    fused = _value_and_grads(fused_rollout, args, grad_y)
    loop = _value_and_grads(seed_rollout_loop, args, grad_y)
    names = ["y", "W_hh", "W_xh", "W_hy", "x", "b", "c"][: len(fused)]
    for name, a, b in zip(names, fused, loop, strict=True):
        scale = float(b.abs().max()) or 1.0
        torch.testing.assert_close(a, b, rtol=0, atol=rtol * scale, msg=name)


def test_fused_gradients_pass_gradcheck():
    args = [a.requires_grad_() for a in _problem(2, 3, 4, 5, 2, 3, True, torch.float64)]
    assert torch.autograd.gradcheck(fused_rollout, args)


def test_only_needed_gradients_are_formed():
    W_hh, W_xh, W_hy, x, _, _ = _problem(2, 3, 4, 5, 2, 3, False, torch.float64)
    W_hh.requires_grad_()
    y = fused_rollout(W_hh, W_xh, W_hy, x, None, None)
    (grad,) = torch.autograd.grad(y.sum(), [W_hh])
    assert grad.shape == W_hh.shape and torch.isfinite(grad).all()


def _kernel_outputs(W_hh, W_xh, W_hy, x, grad_y, threads):
    S, B, L, _ = x.shape
    H, O = W_hh.shape[-1], W_hy.shape[-2]
    y = np.empty((S, B, L, O), np.float32)
    hidden = np.empty((S, B, L, H), np.float32)
    grad_pre = np.empty_like(hidden)
    _core.rollout_cpu(W_hh, W_xh, W_hy, x, y, hidden=hidden, threads=threads)
    _core.rollout_backward_cpu(W_hh, W_hy, hidden, grad_y, grad_pre, threads=threads)
    return y, grad_pre


def test_kernels_are_bitwise_independent_of_threads_and_of_the_other_seeds():
    W_hh, W_xh, W_hy, x, _, _ = (
        None if a is None else a.numpy() for a in _problem(3, 29, 7, 40, 2, 3, False, torch.float32)
    )
    grad_y = np.random.default_rng(2).standard_normal((3, 29, 7, 3)).astype(np.float32)

    one = _kernel_outputs(W_hh, W_xh, W_hy, x, grad_y, threads=1)
    two = _kernel_outputs(W_hh, W_xh, W_hy, x, grad_y, threads=2)
    alone = _kernel_outputs(
        W_hh[1:2].copy(), W_xh[1:2].copy(), W_hy[1:2].copy(), x[1:2].copy(), grad_y[1:2].copy(), 1
    )
    for a, b, c in zip(one, two, alone, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[1:2], c)


def test_a_non_finite_gradient_stays_in_its_seed():
    args = _problem(3, 4, 6, 9, 2, 2, True, torch.float32)
    grad_y = torch.ones(3, 4, 6, 2)
    grad_y[1, 2, 3, 0] = float("nan")
    W_hh, W_xh, W_hy, x, b, c = _value_and_grads(fused_rollout, args, grad_y)[1:]
    for grad in (W_hh, W_xh, W_hy, b, c):
        assert torch.isfinite(grad[[0, 2]]).all()
        assert not torch.isfinite(grad[1]).all()


def test_dtypes_the_kernel_lacks_use_the_loop():
    args = [a.to(torch.bfloat16) for a in _problem(2, 3, 4, 5, 2, 3, True, torch.float64)]
    assert torch.equal(seed_rollout(*args), seed_rollout_loop(*args))
    with pytest.raises(ValueError, match="needs CPU tensors of one dtype"):
        seed_rollout(*args, fused=True)


@pytest.mark.parametrize(
    "name, shapes",
    [
        ("W_hh", dict(W_hh=(2, 5, 4))),
        ("W_hy", dict(W_hy=(2, 5))),
        ("grad_y", dict(grad_y=(2, 3, 4, 2))),
        ("grad_pre", dict(grad_pre=(2, 3, 5, 5))),
        ("hidden", dict(hidden=(2, 3, 4))),
    ],
)
def test_backward_kernel_names_the_array_with_a_wrong_shape(name, shapes):
    want = dict(W_hh=(2, 5, 5), W_hy=(2, 3, 5), hidden=(2, 3, 4, 5), grad_y=(2, 3, 4, 3))
    want["grad_pre"] = want["hidden"]
    arrays = {k: np.zeros(shapes.get(k, v), np.float64) for k, v in want.items()}
    with pytest.raises(ValueError, match=f"^{name}: expected shape"):
        _core.rollout_backward_cpu(**arrays)


def test_rollout_kernel_checks_per_variant_inputs():
    W_hh, W_xh, W_hy = np.zeros((2, 5, 5)), np.zeros((2, 5, 1)), np.zeros((2, 1, 5))
    y = np.zeros((2, 3, 4, 1))
    with pytest.raises(ValueError, match=r"x: expected shape \[3, 4, I\] or \[2, 3, 4, I\]"):
        _core.rollout_cpu(W_hh, W_xh, W_hy, np.zeros((3, 3, 4, 1)), y)


PORTABLE_CHECK = """
import torch
import schurfast
from schurfast import _core
from schurfast._seed_rollout import seed_rollout

assert not _core.rollout_cpu_vectorized()
# without AVX2 the torch paths are faster, so they are the default
from schurfast.rollout import _resolve_backend
assert _resolve_backend("auto", [torch.zeros(1)]) == "reference"
gen = torch.Generator().manual_seed(0)
for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
    S, B, L, H, I, O = 2, 7, 5, 19, 3, 2
    args = [torch.randn(*s, generator=gen, dtype=dtype) for s in
            ((S, H, H), (S, H, I), (S, O, H), (S, B, L, I), (S, H), (S, O))]
    args[0] /= H**0.5
    outs = []
    for fused in (True, False):
        leaves = [a.clone().requires_grad_() for a in args]
        y = seed_rollout(*leaves, fused=fused)
        outs.append([y, *torch.autograd.grad(y.square().sum(), leaves)])
    for a, b in zip(*outs):
        assert (a - b).abs().max() <= tol * b.abs().max(), (dtype, (a - b).abs().max())
    y = schurfast.rollout(args[0], args[1][0], args[2][0], args[3][0], backend="cpu")
    ref = schurfast.rollout(args[0], args[1][0], args[2][0], args[3][0], backend="reference")
    assert (y - ref).abs().max() <= tol * ref.abs().max(), (dtype, (y - ref).abs().max())
print("ok")
"""


def test_portable_path_matches_the_reference():
    """The kernels without AVX2, selected by SCHURFAST_PORTABLE=1, in a fresh interpreter."""
    env = {**os.environ, "SCHURFAST_PORTABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PORTABLE_CHECK], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
