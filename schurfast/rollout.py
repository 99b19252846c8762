# ruff: noqa: E741  (I and O are the input and output sizes of the method's notation)
"""Rollout of one tanh RNN under many recurrent matrices at once.

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b),   y_t = W_hy h_t + c

Backends:

- ``"reference"``: a plain torch loop over time, batched over variants; any device,
  differentiable. Every other backend is tested against it.
- ``"cpu"``: the fused C++ kernel (OpenMP threads over variant and batch tiles, state kept in
  cache across the time loop, tanh and readout fused into each step). float32 uses a
  vectorized tanh accurate to 2 units in the last place; float64 uses ``std::tanh``. Results
  do not depend on how variants and batch rows are split across calls, bit for bit.
- ``"triton"``: the fused Triton kernel for CUDA tensors (``schurfast.kernels.rollout_triton``),
  float32 only, exact IEEE float32 products unless ``allow_tf32`` is passed to it directly.
- ``"auto"``: ``"cpu"`` for CPU tensors where the CPU has AVX2 and FMA (without them the
  kernel's portable loop is slower than torch's own products), ``"triton"`` for CUDA tensors
  when Triton imports, ``"reference"`` otherwise, and ``"reference"`` whenever a gradient is
  needed.

Limitations: the fused backends are not differentiable; the Triton backend computes in
float32 only (float64 CUDA tensors go to the reference loop under ``"auto"``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

BACKENDS = ("auto", "reference", "cpu", "triton")


def rollout(
    W_hh: Tensor,
    W_xh: Tensor,
    W_hy: Tensor,
    x: Tensor,
    *,
    h0: Tensor | None = None,
    b: Tensor | None = None,
    c: Tensor | None = None,
    backend: str = "auto",
    return_hidden: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Runs one tanh RNN under V recurrent matrices on the same inputs.

    ``h_t = tanh(W_hh[v] h_{t-1} + W_xh x_t + b)``, ``y_t = W_hy h_t + c``, as
    ``torch.nn.RNN(nonlinearity="tanh")`` followed by a ``Linear`` readout. The input
    projection ``W_xh x_t`` is computed once for all variants when ``W_xh`` is shared.

    Args:
        W_hh: recurrent matrices ``[V, H, H]``, or ``[H, H]`` for one variant.
        W_xh: input weights ``[H, I]`` shared by all variants, or ``[V, H, I]``.
        W_hy: readout weights ``[O, H]`` shared, or ``[V, O, H]``.
        x: inputs ``[B, L, I]`` (batch first), shared by all variants.
        h0: initial state ``[B, H]`` or ``[V, B, H]``; zeros when omitted.
        b: bias inside the tanh ``[H]`` or ``[V, H]`` (for a ``torch.nn.RNN``,
            ``bias_ih_l0 + bias_hh_l0``).
        c: readout bias ``[O]`` or ``[V, O]``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"triton"``.
        return_hidden: also return the hidden states.

    Returns:
        ``y [V, B, L, O]``, and ``h [V, B, L, H]`` when ``return_hidden``; same dtype
        (float32 or float64) and device as the inputs.

    Raises:
        TypeError: an argument is not a tensor, dtypes differ or are not float32/float64, or
            ``return_hidden`` is not a bool.
        ValueError: a shape does not match, devices differ, the backend is unknown or cannot
            run these tensors (device, dtype, gradients).

    Example:
        >>> import torch, schurfast
        >>> W_hh = 0.1 * torch.randn(4, 16, 16)
        >>> y = schurfast.rollout(W_hh, torch.randn(16, 3), torch.randn(2, 16),
        ...                       torch.randn(5, 7, 3))
        >>> tuple(y.shape)
        (4, 5, 7, 2)
    """
    if not isinstance(return_hidden, bool):
        raise TypeError(
            f"return_hidden: expected True or False, got {type(return_hidden).__name__}"
            f" {return_hidden!r}"
        )
    W_hh, W_xh, W_hy, x, h0, b, c = _validate(W_hh, W_xh, W_hy, x, h0, b, c)
    tensors = [t for t in (W_hh, W_xh, W_hy, x, h0, b, c) if t is not None]
    backend = _resolve_backend(backend, tensors)

    if backend == "reference":
        return rollout_reference(W_hh, W_xh, W_hy, x, h0, b, c, return_hidden)
    if backend == "cpu":
        return _rollout_cpu(W_hh, W_xh, W_hy, x, h0, b, c, return_hidden)
    from schurfast.kernels.rollout_triton import rollout_triton

    return rollout_triton(W_hh, W_xh, W_hy, x, h0=h0, b=b, c=c, return_hidden=return_hidden)


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
    ``c [O]`` or ``[V, O]``. Returns ``y [V, B, L, O]`` (and ``h [V, B, L, H]``). No checks:
    call ``rollout(..., backend="reference")`` for validated input.
    """
    V, H = W_hh.shape[0], W_hh.shape[-1]
    B, L = x.shape[0], x.shape[1]

    u = input_projection(W_xh, x, b).expand(V, B, L, H)

    h = x.new_zeros(V, B, H) if h0 is None else h0.expand(V, B, H)
    W_hh_T = W_hh.transpose(-1, -2)
    states = []
    # one view per step up front: indexing u inside the loop makes the backward pass
    # accumulate a full-size gradient of u at every step, quadratic in L
    for u_t in u.unbind(dim=2):
        h = torch.tanh(torch.baddbmm(u_t, h, W_hh_T))
        states.append(h)
    hidden = torch.stack(states, dim=2) if L else x.new_zeros(V, B, 0, H)

    W_hy_T = W_hy.transpose(-1, -2)
    y = torch.matmul(hidden, W_hy_T if W_hy.dim() == 2 else W_hy_T[:, None])
    if c is not None:
        y = y + (c if c.dim() == 1 else c[:, None, None, :])
    return (y, hidden) if return_hidden else y


def input_projection(W_xh: Tensor, x: Tensor, b: Tensor | None = None) -> Tensor:
    """``W_xh x_t + b`` for every step: ``[B, L, H]`` when shared, else ``[V, B, L, H]``."""
    if W_xh.dim() == 2:
        u = torch.matmul(x, W_xh.T)
    else:
        u = torch.einsum("bli,vhi->vblh", x, W_xh)
    if b is not None:
        if b.dim() == 1:
            u = u + b
        else:
            u = (u if u.dim() == 4 else u[None]) + b[:, None, None, :]
    return u


def _rollout_cpu(W_hh, W_xh, W_hy, x, h0, b, c, return_hidden, out=None):
    """The fused C++ kernel; ``out`` is an optional preallocated ``(y, h)`` (h may be None)."""
    from schurfast import _core

    V, H = W_hh.shape[0], W_hh.shape[-1]
    B, L = x.shape[0], x.shape[1]
    O = W_hy.shape[-2]

    if out is None:
        y = torch.empty(V, B, L, O, dtype=x.dtype)
        hidden = torch.empty(V, B, L, H, dtype=x.dtype) if return_hidden else None
    else:
        y, hidden = out

    def arr(t: Tensor | None) -> np.ndarray | None:
        return None if t is None else t.detach().contiguous().numpy()

    _core.rollout_cpu(
        arr(W_hh),
        arr(W_xh),
        arr(W_hy),
        arr(x),
        y.numpy(),
        hidden=arr(hidden),
        b=arr(b),
        h0=arr(h0),
        c=arr(c),
    )
    return (y, hidden) if return_hidden else y


def _validate(W_hh, W_xh, W_hy, x, h0, b, c):
    named = {"W_hh": W_hh, "W_xh": W_xh, "W_hy": W_hy, "x": x, "h0": h0, "b": b, "c": c}
    optional = ("h0", "b", "c")
    for name, t in named.items():
        if (t is not None or name not in optional) and not isinstance(t, Tensor):
            raise TypeError(
                f"{name}: expected a torch.Tensor, got {type(t).__name__}"
                + (" (use torch.from_numpy)" if isinstance(t, np.ndarray) else "")
            )

    if W_hh.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"W_hh: expected dtype torch.float32 or torch.float64, got {W_hh.dtype}")
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype != W_hh.dtype:
            raise TypeError(
                f"{name}: expected dtype {W_hh.dtype} (the dtype of W_hh), got {t.dtype}"
            )
        if t.device != W_hh.device:
            raise ValueError(
                f"{name}: expected device {W_hh.device} (the device of W_hh), got {t.device}"
            )

    if W_hh.dim() == 2:
        W_hh = W_hh[None]
    if W_hh.dim() != 3 or W_hh.shape[1] != W_hh.shape[2]:
        raise ValueError(f"W_hh: expected shape [V, H, H] or [H, H], got {list(W_hh.shape)}")
    V, H = W_hh.shape[0], W_hh.shape[1]
    if x.dim() != 3:
        raise ValueError(f"x: expected shape [B, L, I], got {list(x.shape)}")
    B, _, I = x.shape

    _check_shape("W_xh", W_xh, (H, I), V, "H = W_hh.shape[-1], I = x.shape[-1]")
    if W_hy.dim() not in (2, 3):
        raise ValueError(f"W_hy: expected shape [O, H] or [V, O, H], got {list(W_hy.shape)}")
    O = W_hy.shape[-2]
    _check_shape("W_hy", W_hy, (O, H), V, "O outputs, H = W_hh.shape[-1]")
    if h0 is not None:
        _check_shape("h0", h0, (B, H), V, "B = x.shape[0]")
    if b is not None:
        _check_shape("b", b, (H,), V, "H hidden units")
    if c is not None:
        _check_shape("c", c, (O,), V, "O = W_hy.shape[-2]")
    return W_hh, W_xh, W_hy, x, h0, b, c


def _check_shape(name: str, t: Tensor, shared: tuple[int, ...], V: int, hint: str) -> None:
    if tuple(t.shape) in (shared, (V, *shared)):
        return
    raise ValueError(
        f"{name}: expected shape {list(shared)} or {[V, *shared]} ({hint}, V = {V} variants), "
        f"got {list(t.shape)}"
    )


def _resolve_backend(backend: str, tensors: list[Tensor]) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    device = tensors[0].device
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)

    if backend == "auto":
        if needs_grad:
            return "reference"
        if device.type == "cpu":
            from schurfast import _core

            return "cpu" if _core.rollout_cpu_vectorized() else "reference"
        if device.type == "cuda" and tensors[0].dtype == torch.float32 and _triton_available():
            return "triton"
        return "reference"

    if backend in ("cpu", "triton") and needs_grad:
        raise ValueError(
            f"backend {backend!r} is not differentiable and an input requires grad; "
            "use backend='reference' (or torch.no_grad())"
        )
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got device {device}")
    if backend == "triton":
        if not _triton_available():
            raise ValueError("backend 'triton' needs the triton package, which does not import")
        if device.type != "cuda" and not (_triton_interpreted() and device.type == "cpu"):
            raise ValueError(
                f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 on CPU), "
                f"got device {device}"
            )
        if tensors[0].dtype != torch.float32:
            raise ValueError(
                f"backend 'triton' computes in float32 only, got {tensors[0].dtype}; "
                "use backend='reference' for float64"
            )
    return backend


def _triton_interpreted() -> bool:
    """Whether Triton runs its kernels in its interpreter, on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
