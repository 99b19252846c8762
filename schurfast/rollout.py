"""Rollout of one tanh RNN under many recurrent matrices at once.

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b),   y_t = W_hy h_t + c
"""

from __future__ import annotations

import torch
from torch import Tensor


def rollout_reference(
    W_hh: Tensor,
    W_xh: Tensor,
    W_hy: Tensor,
    x: Tensor,
    h0: Tensor | None = None,
    b: Tensor | None = None,
    c: Tensor | None = None,
    return_hidden: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Plain torch loop over time, batched over variants; differentiable, any device.

    Shapes: ``W_hh [V, H, H]``, ``W_xh [H, I]`` or ``[V, H, I]``, ``W_hy [O, H]`` or
    ``[V, O, H]``, ``x [B, L, I]``, ``h0 [B, H]`` or ``[V, B, H]``, ``b [H]`` or ``[V, H]``,
    ``c [O]`` or ``[V, O]``. Returns ``y [V, B, L, O]`` (and ``h [V, B, L, H]``).
    """
    V, H = W_hh.shape[0], W_hh.shape[-1]
    B, L = x.shape[0], x.shape[1]

    # input projection once for all variants when W_xh is shared: [B, L, H] or [V, B, L, H]
    if W_xh.dim() == 2:
        u = torch.matmul(x, W_xh.T)
    else:
        u = torch.einsum("bli,vhi->vblh", x, W_xh)
    if b is not None:
        u = u + (b if b.dim() == 1 else b[:, None, None, :])
    u = u.expand(V, B, L, H)

    h = x.new_zeros(V, B, H) if h0 is None else h0.expand(V, B, H)
    W_hh_T = W_hh.transpose(-1, -2)
    states = []
    for t in range(L):
        h = torch.tanh(torch.bmm(h, W_hh_T) + u[:, :, t])
        states.append(h)
    hidden = torch.stack(states, dim=2) if L else x.new_zeros(V, B, 0, H)

    W_hy_T = W_hy.transpose(-1, -2)
    y = torch.matmul(hidden, W_hy_T if W_hy.dim() == 2 else W_hy_T[:, None])
    if c is not None:
        y = y + (c if c.dim() == 1 else c[:, None, None, :])
    return (y, hidden) if return_hidden else y
