# ruff: noqa: E741  (I and O are the input and output sizes of the method's notation)
"""Fused Triton rollout of one tanh RNN under V recurrent matrices.

    h_t = tanh(W_hh[v] h_{t-1} + u_t + b),   y_t = W_hy h_t + c,   u_t = W_xh x_t

One program per (variant, batch tile) runs the whole time loop: the pre-activation, the tanh
and the readout of every step happen in registers, and only ``y`` (and ``h`` on request)
goes back to memory.

- Resident path (padded H <= 64): ``W_hh[v]^T`` and ``W_hy^T`` are loaded once and kept in
  registers for the whole sequence.
- Streamed path (larger H): ``W_hh[v]`` no longer fits on chip next to the state, so each
  step streams it in ``BLOCK_K x BLOCK_N`` chunks from L2 (every program of a variant reads
  the same matrix, so it stays in L2), and the state round-trips through a per-program
  scratch buffer, double-buffered over time, between barriers.

H, O and the batch are padded to powers of two >= 16 (``tl.dot`` needs it) and masked; the
padded state columns are kept exactly zero. All offsets are 64-bit. The tile sizes were
chosen by compiling for sm_90 (ptxas reports no spills for them); a padded H of 128 kept
resident spilled heavily, hence the streamed path from 128 up.

Precision: float32 in and out. Products are exact IEEE float32 by default
(``input_precision="ieee"``). ``allow_tf32=True`` rounds both operands of every product to
TF32 (10-bit mantissa, relative rounding 2^-11 ~ 4.9e-4 per operand), so a pre-activation
carries relative errors of order 1e-3 that the recurrence can amplify over long sequences;
use it for throughput sweeps, not for comparing against float32 references. The tanh is
``x + x^3 P(x^2)`` below 0.625 and ``1 - 2t/(1 + t)``, ``t = exp(-2|x|)``, above, accurate to
a few float32 ulp with the device's exp.

Limitations: float32 only; not differentiable (use the reference backend for gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

# padded hidden sizes up to this keep W_hh^T in registers for the whole sequence
MAX_RESIDENT_H = 64


@dataclass(frozen=True)
class Blocks:
    """Padded sizes and tiles of one launch (all powers of two, all >= 16)."""

    BLOCK_B: int
    HP: int
    OP: int
    resident: bool
    BLOCK_K: int
    num_warps: int


def _pow2_at_least_16(n: int) -> int:
    return max(16, triton.next_power_of_2(max(int(n), 1)))


def block_sizes(B: int, H: int, O: int, *, max_resident_h: int = MAX_RESIDENT_H) -> Blocks:
    """Chooses the padded sizes and tiles for a launch; a pure function, tested on its own."""
    HP = _pow2_at_least_16(H)
    OP = _pow2_at_least_16(O)
    resident = HP <= max_resident_h

    # sizes checked with the sm_90 compiler for no register spills in IEEE float32 mode
    if resident:
        BLOCK_B = 16 if HP >= 64 else min(32, _pow2_at_least_16(B))
        BLOCK_K = HP
        num_warps = 8 if HP >= 64 or BLOCK_B == 32 else 4
    else:
        BLOCK_B = min(32, _pow2_at_least_16(B))
        BLOCK_K = min(64, HP)
        num_warps = 8
    return Blocks(BLOCK_B, HP, OP, resident, BLOCK_K, num_warps)


@triton.jit
def _tanh(x):
    ax = tl.abs(x)

    # small |x|: odd polynomial, no cancellation
    s = x * x
    p = -0.005715699165576534
    p = p * s + 0.020649859596569745
    p = p * s - 0.05374351310549617
    p = p * s + 0.13331496420047884
    p = p * s - 0.3333328446798086
    small = x + x * s * p

    # large |x|: t = exp(-2|x|) <= 0.29, no cancellation in 1 - 2t / (1 + t)
    t = tl.exp(-2.0 * tl.minimum(ax, 10.0))
    large = 1.0 - 2.0 * t / (1.0 + t)
    large = tl.where(x < 0, -large, large)

    y = tl.where(ax < 0.625, small, large)
    return tl.where(x != x, x, y)


@triton.jit
def _rollout_resident(
    W_hh, U, Bias, H0, W_hy, C, Y, Hid,
    B, L, H, O,
    U_PER_V: tl.constexpr, HAS_B: tl.constexpr, B_PER_V: tl.constexpr,
    HAS_H0: tl.constexpr, H0_PER_V: tl.constexpr, WY_PER_V: tl.constexpr,
    HAS_C: tl.constexpr, C_PER_V: tl.constexpr, STORE_H: tl.constexpr,
    BLOCK_B: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # ids, offsets and masks (64-bit)
    i_v = tl.program_id(0).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B).to(tl.int64)
    o_h = tl.arange(0, HP).to(tl.int64)
    o_o = tl.arange(0, OP).to(tl.int64)
    m_b, m_h, m_o = o_b < B, o_h < H, o_o < O
    m_bh = m_b[:, None] & m_h[None, :]
    m_bo = m_b[:, None] & m_o[None, :]

    # W_hh[v]^T [HP(k), HP(j)] and W_hy^T [HP(k), OP(o)], on chip for the whole sequence
    p_w = W_hh + i_v * H * H + o_h[None, :] * H + o_h[:, None]
    b_w = tl.load(p_w, mask=m_h[:, None] & m_h[None, :], other=0.0)
    p_wy = W_hy + (i_v * O * H if WY_PER_V else 0) + o_o[None, :] * H + o_h[:, None]
    b_wy = tl.load(p_wy, mask=m_h[:, None] & m_o[None, :], other=0.0)
    b_bias = tl.zeros([HP], dtype=tl.float32)
    if HAS_B:
        b_bias = tl.load(Bias + (i_v * H if B_PER_V else 0) + o_h, mask=m_h, other=0.0)
    b_c = tl.zeros([OP], dtype=tl.float32)
    if HAS_C:
        b_c = tl.load(C + (i_v * O if C_PER_V else 0) + o_o, mask=m_o, other=0.0)

    # state
    b_h = tl.zeros([BLOCK_B, HP], dtype=tl.float32)
    if HAS_H0:
        p_h0 = H0 + (i_v * B * H if H0_PER_V else 0) + o_b[:, None] * H + o_h[None, :]
        b_h = tl.load(p_h0, mask=m_bh, other=0.0)

    # pointers at t = 0, advanced by one step each iteration
    p_u = U + (i_v * B * L * H if U_PER_V else 0) + o_b[:, None] * L * H + o_h[None, :]
    p_y = Y + i_v * B * L * O + o_b[:, None] * L * O + o_o[None, :]
    p_hid = Hid + i_v * B * L * H + o_b[:, None] * L * H + o_h[None, :]

    for _ in range(L):
        b_u = tl.load(p_u, mask=m_bh, other=0.0) + b_bias[None, :]
        b_pre = tl.dot(b_h, b_w, b_u, input_precision=PRECISION)
        b_h = tl.where(m_h[None, :], _tanh(b_pre), 0.0)
        b_y = tl.dot(b_h, b_wy, input_precision=PRECISION) + b_c[None, :]
        tl.store(p_y, b_y, mask=m_bo)
        if STORE_H:
            tl.store(p_hid, b_h, mask=m_bh)
        p_u += H
        p_y += O
        p_hid += H


@triton.jit
def _rollout_streamed(
    W_hh, U, Bias, H0, W_hy, C, Y, Hid, Scratch,
    B, L, H, O,
    U_PER_V: tl.constexpr, HAS_B: tl.constexpr, B_PER_V: tl.constexpr,
    HAS_H0: tl.constexpr, H0_PER_V: tl.constexpr, WY_PER_V: tl.constexpr,
    HAS_C: tl.constexpr, C_PER_V: tl.constexpr, STORE_H: tl.constexpr,
    BLOCK_B: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    # ids, offsets and masks (64-bit); column chunks are BLOCK_K wide for both k and j
    i_v = tl.program_id(0).to(tl.int64)
    i_b = tl.program_id(1).to(tl.int64)
    n_b = tl.num_programs(1).to(tl.int64)
    o_r = tl.arange(0, BLOCK_B).to(tl.int64)
    o_b = i_b * BLOCK_B + o_r
    o_k = tl.arange(0, BLOCK_K).to(tl.int64)
    o_o = tl.arange(0, OP).to(tl.int64)
    m_b, m_o = o_b < B, o_o < O
    m_bo = m_b[:, None] & m_o[None, :]

    # this program's two state buffers [2, BLOCK_B, HP], padding included, so no masks
    p_s = Scratch + (i_v * n_b + i_b) * 2 * BLOCK_B * HP + o_r[:, None] * HP + o_k[None, :]
    b_c = tl.zeros([OP], dtype=tl.float32)
    if HAS_C:
        b_c = tl.load(C + (i_v * O if C_PER_V else 0) + o_o, mask=m_o, other=0.0)
    p_w = W_hh + i_v * H * H
    p_wy = W_hy + (i_v * O * H if WY_PER_V else 0)

    # initial state into buffer 0
    for k0 in range(0, HP, BLOCK_K):
        m_k = (k0 + o_k) < H
        b_h0 = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
        if HAS_H0:
            p_h0 = H0 + (i_v * B * H if H0_PER_V else 0) + o_b[:, None] * H + (k0 + o_k)[None, :]
            b_h0 = tl.load(p_h0, mask=m_b[:, None] & m_k[None, :], other=0.0)
        tl.store(p_s + k0, b_h0)
    tl.debug_barrier()

    p_u = U + (i_v * B * L * H if U_PER_V else 0) + o_b[:, None] * L * H
    p_y = Y + i_v * B * L * O + o_b[:, None] * L * O + o_o[None, :]
    p_hid = Hid + i_v * B * L * H + o_b[:, None] * L * H
    for t in range(L):
        p_src = p_s + (t % 2) * BLOCK_B * HP
        p_dst = p_s + ((t + 1) % 2) * BLOCK_B * HP
        b_y = tl.zeros([BLOCK_B, OP], dtype=tl.float32)
        for n0 in range(0, HP, BLOCK_K):
            m_n = (n0 + o_k) < H
            m_bn = m_b[:, None] & m_n[None, :]
            b_acc = tl.load(p_u + (n0 + o_k)[None, :], mask=m_bn, other=0.0)
            if HAS_B:
                p_bias = Bias + (i_v * H if B_PER_V else 0) + n0 + o_k
                b_acc += tl.load(p_bias, mask=m_n, other=0.0)[None, :]

            # pre-activation chunk: stream W_hh[v]^T [k0:k0+K, n0:n0+K] from L2
            for k0 in range(0, HP, BLOCK_K):
                m_k = (k0 + o_k) < H
                b_a = tl.load(p_src + k0)
                p_wt = p_w + (n0 + o_k)[None, :] * H + (k0 + o_k)[:, None]
                b_wt = tl.load(p_wt, mask=m_k[:, None] & m_n[None, :], other=0.0)
                b_acc = tl.dot(b_a, b_wt, b_acc, input_precision=PRECISION)

            b_hn = tl.where(m_n[None, :], _tanh(b_acc), 0.0)
            tl.store(p_dst + n0, b_hn)
            if STORE_H:
                tl.store(p_hid + (n0 + o_k)[None, :], b_hn, mask=m_bn)

            # readout, accumulated chunk by chunk
            p_wyt = p_wy + o_o[None, :] * H + (n0 + o_k)[:, None]
            b_wyt = tl.load(p_wyt, mask=m_n[:, None] & m_o[None, :], other=0.0)
            b_y = tl.dot(b_hn, b_wyt, b_y, input_precision=PRECISION)

        tl.store(p_y, b_y + b_c[None, :], mask=m_bo)
        # the next step reads the whole state this step wrote
        tl.debug_barrier()
        p_u += H
        p_y += O
        p_hid += H


def rollout_triton(
    W_hh: Tensor,
    W_xh: Tensor,
    W_hy: Tensor,
    x: Tensor,
    *,
    h0: Tensor | None = None,
    b: Tensor | None = None,
    c: Tensor | None = None,
    return_hidden: bool = False,
    allow_tf32: bool = False,
    max_resident_h: int = MAX_RESIDENT_H,
    out: tuple[Tensor, Tensor | None] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused rollout on the GPU (or the Triton interpreter); float32.

    Same shapes and meaning as ``schurfast.rollout`` with ``W_hh [V, H, H]``; no input
    checks here (``schurfast.rollout(..., backend="triton")`` validates first).

    Args:
        allow_tf32: TF32 products (faster on tensor cores, relative error ~1e-3; see the
            module docstring). Default: exact IEEE float32.
        max_resident_h: padded hidden sizes up to this keep ``W_hh`` in registers; larger ones
            stream it from L2.
        out: preallocated ``(y, h)`` to write into (``h`` may be None).
    """
    from schurfast.rollout import input_projection

    if W_hh.dtype != torch.float32:
        raise NotImplementedError(
            f"the triton rollout computes in float32 only, got {W_hh.dtype}: its tanh and "
            "tile sizes are tuned for float32"
        )
    V, H = W_hh.shape[0], W_hh.shape[-1]
    B, L = x.shape[0], x.shape[1]
    O = W_hy.shape[-2]
    blocks = block_sizes(B, H, O, max_resident_h=max_resident_h)

    u = input_projection(W_xh, x).contiguous()
    if out is None:
        y = torch.empty(V, B, L, O, dtype=x.dtype, device=x.device)
        hidden = torch.empty(V, B, L, H, dtype=x.dtype, device=x.device) if return_hidden else None
    else:
        y, hidden = out
    n_tiles = triton.cdiv(B, blocks.BLOCK_B)
    if V * n_tiles * L == 0:
        return (y, hidden) if return_hidden else y

    W_hh, W_hy = W_hh.contiguous(), W_hy.contiguous()
    dummy = y
    args = (
        W_hh,
        u,
        dummy if b is None else b.contiguous(),
        dummy if h0 is None else h0.contiguous(),
        W_hy,
        dummy if c is None else c.contiguous(),
        y,
        dummy if hidden is None else hidden,
    )
    flags = dict(
        U_PER_V=u.dim() == 4,
        HAS_B=b is not None,
        B_PER_V=b is not None and b.dim() == 2,
        HAS_H0=h0 is not None,
        H0_PER_V=h0 is not None and h0.dim() == 3,
        WY_PER_V=W_hy.dim() == 3,
        HAS_C=c is not None,
        C_PER_V=c is not None and c.dim() == 2,
        STORE_H=hidden is not None,
        BLOCK_B=blocks.BLOCK_B,
        HP=blocks.HP,
        OP=blocks.OP,
        PRECISION="tf32" if allow_tf32 else "ieee",
        num_warps=blocks.num_warps,
        # contracted multiply-adds in the tanh; stated so the default does not change under us
        enable_fp_fusion=True,
    )
    grid = (V, n_tiles)
    if blocks.resident:
        _rollout_resident[grid](*args, B, L, H, O, **flags)
    else:
        # the state of each program, double-buffered over time
        scratch = torch.empty(
            V * n_tiles * 2 * blocks.BLOCK_B * blocks.HP, dtype=x.dtype, device=x.device
        )
        _rollout_streamed[grid](*args, scratch, B, L, H, O, BLOCK_K=blocks.BLOCK_K, **flags)
    return (y, hidden) if return_hidden else y
