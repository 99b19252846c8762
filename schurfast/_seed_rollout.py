# ruff: noqa: E741  (I and O are the input and output sizes of the method's notation)
"""The differentiable rollout of a stack of independent networks, one per seed, for training.

``y[s] = W_hy[s] h + c[s]`` with ``h_t = tanh(W_hh[s] h_{t-1} + W_xh[s] x[s, :, t] + b[s])``
from a zero state: every weight carries a leading seed axis ``S`` and every seed has its own
inputs ``x [S, B, L, I]``.

On CPU tensors, where the CPU has AVX2 and FMA, the forward pass is the fused rollout kernel
of the compiled core and the backward pass its hand-written backpropagation through time, both
on as many OpenMP threads as ``torch.get_num_threads()`` over (seed, batch tile) work items.
The kernel returns the gradient with respect to every pre-activation; each weight gradient is
then one product over all rows and steps of a seed. Elsewhere (and on CPUs without AVX2, where
the kernel's portable loop is slower than torch's products), the rollout is a torch loop over
time differentiated by autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def seed_rollout(
    W_hh: Tensor,
    W_xh: Tensor,
    W_hy: Tensor,
    x: Tensor,
    b: Tensor | None,
    c: Tensor | None,
    *,
    fused: bool | None = None,
) -> Tensor:
    """``y [S, B, L, O]`` from ``W_hh [S, H, H]``, ``W_xh [S, H, I]``, ``W_hy [S, O, H]``,
    ``x [S, B, L, I]`` and optional biases ``b [S, H]``, ``c [S, O]``; differentiable.

    ``fused`` picks the compiled kernels (True) or the torch loop (False); by default the
    kernels run where they are faster: on CPU tensors of one float dtype, on a CPU with AVX2.
    """
    tensors = [t for t in (W_hh, W_xh, W_hy, x, b, c) if t is not None]
    fits = all(t.device.type == "cpu" and t.dtype == x.dtype for t in tensors) and x.dtype in (
        torch.float32,
        torch.float64,
    )
    if fused is None:
        from schurfast import _core

        fused = fits and _core.rollout_cpu_vectorized()
    elif fused and not fits:
        raise ValueError("the fused seed rollout needs CPU tensors of one dtype, float32 or 64")
    if not fused:
        return seed_rollout_loop(W_hh, W_xh, W_hy, x, b, c)
    y = _FusedSeedRollout.apply(W_hh, W_xh, W_hy, x, b)
    return y if c is None else y + c[:, None, None, :]


def seed_rollout_loop(
    W_hh: Tensor, W_xh: Tensor, W_hy: Tensor, x: Tensor, b: Tensor | None, c: Tensor | None
) -> Tensor:
    """The same rollout as a torch loop over time, differentiated by autograd."""
    S, B, L, I = x.shape
    u = torch.bmm(x.reshape(S, B * L, I), W_xh.transpose(1, 2)).view(S, B, L, -1)
    if b is not None:
        u = u + b[:, None, None, :]

    # unbind once: indexing u[:, :, t] in the loop would make every step's backward allocate
    # and fill a gradient the size of all of u
    h = x.new_zeros(S, B, W_hh.shape[-1])
    W_hh_T = W_hh.transpose(-1, -2)
    states = []
    for u_t in u.unbind(dim=2):
        h = torch.tanh(torch.bmm(h, W_hh_T) + u_t)
        states.append(h)
    hidden = torch.stack(states, dim=2)

    y = torch.bmm(hidden.view(S, B * L, -1), W_hy.transpose(1, 2)).view(S, B, L, -1)
    return y if c is None else y + c[:, None, None, :]


class _FusedSeedRollout(torch.autograd.Function):
    """The CPU kernels; the readout bias is added outside, where autograd handles it."""

    @staticmethod
    def forward(ctx, W_hh, W_xh, W_hy, x, b):
        from schurfast import _core

        W_hh, W_xh, W_hy, x = (t.detach().contiguous() for t in (W_hh, W_xh, W_hy, x))
        b = None if b is None else b.detach().contiguous()
        S, B, L, _ = x.shape
        H, O = W_hh.shape[-1], W_hy.shape[-2]
        y = x.new_empty(S, B, L, O)
        hidden = x.new_empty(S, B, L, H)
        _core.rollout_cpu(
            W_hh.numpy(),
            W_xh.numpy(),
            W_hy.numpy(),
            x.numpy(),
            y.numpy(),
            hidden=hidden.numpy(),
            b=None if b is None else b.numpy(),
            threads=torch.get_num_threads(),
        )
        ctx.save_for_backward(W_hh, W_xh, W_hy, x, hidden)
        ctx.has_bias = b is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        from schurfast import _core

        W_hh, W_xh, W_hy, x, hidden = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_pre = torch.empty_like(hidden)
        _core.rollout_backward_cpu(
            W_hh.numpy(),
            W_hy.numpy(),
            hidden.numpy(),
            grad_y.numpy(),
            grad_pre.numpy(),
            threads=torch.get_num_threads(),
        )

        # every weight gradient is one product over the rows and steps of a seed, flattened
        S, B, L, H = hidden.shape
        pre = grad_pre.view(S, B * L, H)
        hid = hidden.view(S, B * L, H)
        need_W_hh, need_W_xh, need_W_hy, need_x, need_b = ctx.needs_input_grad
        grad_W_hh = grad_W_xh = grad_W_hy = grad_x = grad_b = None
        if need_W_hh:
            # dW_hh pairs grad_pre at step t with the state at step t - 1: with rows and steps
            # flattened, that is each grad_pre row with the hidden row before it, except that
            # this also pairs step 0 of batch row b + 1 with the last step of row b, taken back
            # out after
            grad_W_hh = torch.bmm(pre[:, 1:].transpose(1, 2), hid[:, :-1])
            if B > 1:
                grad_W_hh -= torch.bmm(grad_pre[:, 1:, 0].transpose(1, 2), hidden[:, :-1, L - 1])
        if need_W_xh:
            # as (x^T grad_pre)^T: torch's bmm is slow for a batch of [H, n] @ [n, I], small I
            grad_W_xh = torch.bmm(x.view(S, B * L, -1).transpose(1, 2), pre).transpose(1, 2)
        if need_W_hy:
            grad_W_hy = torch.bmm(grad_y.view(S, B * L, -1).transpose(1, 2), hid)
        if need_x:
            grad_x = torch.bmm(pre, W_xh).view(x.shape)
        if need_b and ctx.has_bias:
            grad_b = grad_pre.sum(dim=(1, 2))
        return grad_W_hh, grad_W_xh, grad_W_hy, grad_x, grad_b
