# ruff: noqa: E741  (I and O are the input and output sizes of the method's notation)
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from schurfast.kernels import rollout_triton as rt

import schurfast
from schurfast import _core
from schurfast.rollout import _resolve_backend, _rollout_cpu, rollout

RTOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def make_problem(V, B, L, H, I=3, O=2, *, dtype=torch.float64, per_variant=False,
                 bias=True, with_h0=True, x_scale=1.0, seed=0):  # fmt: skip
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    # spectral radius about 0.9, so float32 rounding is not amplified by the dynamics
    W_hh = randn(V, H, H, scale=0.9 / H**0.5)
    W_xh = randn(*((V,) if per_variant else ()), H, I, scale=1.0 / I**0.5)
    W_hy = randn(*((V,) if per_variant else ()), O, H, scale=1.0 / H**0.5)
    x = randn(B, L, I, scale=x_scale)
    kw = {}
    if bias:
        kw["b"] = randn(*((V,) if per_variant else ()), H, scale=0.5)
        kw["c"] = randn(*((V,) if per_variant else ()), O)
    if with_h0:
        kw["h0"] = randn(*((V,) if per_variant else ()), B, H, scale=0.5)
    return (W_hh, W_xh, W_hy, x), kw


def torch_rnn(W_hh, W_xh, W_hy, x, h0=None, b=None, c=None):
    """torch.nn.RNN + a linear readout, one variant at a time: y [V, B, L, O], h [V, B, L, H]."""
    V, H, I = W_hh.shape[0], W_hh.shape[1], x.shape[2]
    ys, hs = [], []
    for v in range(V):

        def pick(t, shared_dim, v=v):
            return None if t is None else (t[v] if t.dim() > shared_dim else t)

        rnn = torch.nn.RNN(I, H, batch_first=True, bias=b is not None, dtype=x.dtype)
        with torch.no_grad():
            rnn.weight_hh_l0.copy_(W_hh[v])
            rnn.weight_ih_l0.copy_(pick(W_xh, 2))
            if b is not None:
                rnn.bias_ih_l0.copy_(pick(b, 1))
                rnn.bias_hh_l0.zero_()
            h0v = pick(h0, 2)
            h, _ = rnn(x, None if h0v is None else h0v[None].contiguous())
            y = h @ pick(W_hy, 2).T
            if c is not None:
                y = y + pick(c, 1)
        ys.append(y)
        hs.append(h)
    return torch.stack(ys), torch.stack(hs)


def assert_matches(got, want, dtype, what):
    scale = max(want.abs().max().item(), 1e-300) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert err <= RTOL[dtype] * scale, f"{what}: max error {err:.3e} vs scale {scale:.3e}"


def check_against_rnn(backend, dtype, V, B, L, H, **kw):
    args, extra = make_problem(V, B, L, H, dtype=dtype, **kw)
    y, h = rollout(*args, **extra, backend=backend, return_hidden=True)
    y_ref, h_ref = torch_rnn(*args, **extra)
    assert y.dtype == dtype and h.dtype == dtype
    assert_matches(h, h_ref, dtype, f"{backend} hidden")
    assert_matches(y, y_ref, dtype, f"{backend} output")


HIDDEN = [1, 3, 17, 50, 64, 72, 100, 128, 256]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("H", HIDDEN)
def test_rollout_matches_torch_rnn(backend, dtype, H):
    # V, B, L from {1, odd}, cycling shared/per-variant weights, biases and h0 with H
    i = HIDDEN.index(H)
    V, B, L = [(1, 7, 5), (3, 1, 9), (5, 13, 1), (3, 9, 11)][i % 4]
    check_against_rnn(
        backend, dtype, V, B, L, H, per_variant=i % 2 == 1, bias=i % 3 != 2, with_h0=i % 4 < 2
    )


@pytest.mark.parametrize(
    "per_variant, bias, with_h0", list(itertools.product([False, True], repeat=3))
)
def test_rollout_cpu_all_argument_combinations(per_variant, bias, with_h0):
    for dtype in (torch.float64, torch.float32):
        check_against_rnn(
            "cpu", dtype, 3, 11, 7, 33, per_variant=per_variant, bias=bias, with_h0=with_h0
        )


@pytest.mark.parametrize(
    "V, B, L, H, per_variant, bias, with_h0, max_resident_h",
    [
        (1, 1, 1, 1, False, False, False, 64),
        (3, 5, 4, 3, True, True, True, 64),
        (2, 17, 3, 17, False, True, False, 64),
        (1, 3, 3, 50, True, False, True, 64),
        # streamed path, padded H 128 in two K chunks
        (2, 5, 3, 72, False, True, True, 64),
        # streamed path forced on a small H, several row tiles
        (1, 33, 2, 17, True, True, True, 16),
    ],
)
def test_rollout_triton_matches_torch_rnn(V, B, L, H, per_variant, bias, with_h0, max_resident_h):
    args, extra = make_problem(V, B, L, H, dtype=torch.float32, per_variant=per_variant,
                               bias=bias, with_h0=with_h0)  # fmt: skip
    y, h = rt.rollout_triton(*args, **extra, return_hidden=True, max_resident_h=max_resident_h)
    y_ref, h_ref = torch_rnn(*args, **extra)
    assert_matches(h, h_ref, torch.float32, "triton hidden")
    assert_matches(y, y_ref, torch.float32, "triton output")


def test_rollout_triton_through_public_entry_point():
    check_against_rnn("triton", torch.float32, 2, 3, 4, 5)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_rollout_saturating_inputs(backend):
    # inputs of size 30 drive tanh to +-1, where an inaccurate tanh or exp overflow shows
    dtypes = [torch.float32] if backend == "triton" else [torch.float64, torch.float32]
    for dtype in dtypes:
        args, extra = make_problem(2, 5, 6, 17, dtype=dtype, x_scale=30.0)
        y, h = rollout(*args, **extra, backend=backend, return_hidden=True)
        y_ref, h_ref = torch_rnn(*args, **extra)
        assert (h.abs() > 0.999).float().mean() > 0.5, "inputs did not saturate"
        assert_matches(h, h_ref, dtype, f"{backend} hidden")
        assert_matches(y, y_ref, dtype, f"{backend} output")


def test_rollout_single_matrix_gives_one_variant():
    args, extra = make_problem(1, 4, 3, 6)
    y = rollout(args[0][0], *args[1:], **extra)
    assert y.shape == (1, 4, 3, 2)
    torch.testing.assert_close(y, rollout(*args, **extra), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rollout_cpu_overwrites_poisoned_outputs(dtype):
    args, extra = make_problem(3, 7, 5, 20, dtype=dtype, per_variant=True)
    y = torch.full((3, 7, 5, 2), float("nan"), dtype=dtype)
    h = torch.full((3, 7, 5, 20), float("nan"), dtype=dtype)
    _rollout_cpu(*args, extra["h0"], extra["b"], extra["c"], True, out=(y, h))
    assert not y.isnan().any() and not h.isnan().any()
    y_ref, h_ref = rollout(*args, **extra, backend="reference", return_hidden=True)
    assert_matches(y, y_ref, dtype, "poisoned y")
    assert_matches(h, h_ref, dtype, "poisoned h")


@pytest.mark.parametrize("H", [5, 72])
def test_rollout_triton_overwrites_poisoned_outputs(H):
    args, extra = make_problem(2, 5, 3, H, dtype=torch.float32)
    y = torch.full((2, 5, 3, 2), float("nan"))
    h = torch.full((2, 5, 3, H), float("nan"))
    rt.rollout_triton(*args, **extra, return_hidden=True, out=(y, h))
    assert not y.isnan().any() and not h.isnan().any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("H", [3, 40, 130])
def test_rollout_cpu_is_independent_of_the_split(dtype, H):
    # bit for bit: variant slices and row slices (which change the tiling) give the same bits
    V, B = 5, 37
    args, extra = make_problem(V, B, 6, H, dtype=dtype, per_variant=True)
    W_hh, W_xh, W_hy, x = args
    y, h = rollout(*args, **extra, backend="cpu", return_hidden=True)

    for v in range(V):
        sub = {k: t[v : v + 1] for k, t in extra.items()}
        y_v, h_v = rollout(W_hh[v : v + 1], W_xh[v : v + 1], W_hy[v : v + 1], x, **sub,
                           backend="cpu", return_hidden=True)  # fmt: skip
        assert torch.equal(y_v, y[v : v + 1]) and torch.equal(h_v, h[v : v + 1])

    for lo, hi in [(0, 1), (1, 14), (14, 37), (5, 6)]:
        sub = dict(extra, h0=extra["h0"][:, lo:hi])
        y_r, h_r = rollout(W_hh, W_xh, W_hy, x[lo:hi], **sub, backend="cpu", return_hidden=True)
        assert torch.equal(y_r, y[:, lo:hi]) and torch.equal(h_r, h[:, lo:hi])


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_rollout_nan_reaches_only_affected_outputs(backend):
    dtype = torch.float32
    args, extra = make_problem(3, 5, 6, 17, dtype=dtype)
    W_hh, W_xh, W_hy, x = args
    clean = rollout(*args, **extra, backend=backend)

    # a NaN input at (batch 2, step 3): that row from step 3 on, in every variant
    x_bad = x.clone()
    x_bad[2, 3, 0] = float("nan")
    y = rollout(W_hh, W_xh, W_hy, x_bad, **extra, backend=backend)
    affected = torch.zeros_like(y, dtype=torch.bool)
    affected[:, 2, 3:] = True
    assert y[affected].isnan().all()
    assert torch.equal(y[~affected], clean[~affected])

    # a NaN in variant 1's recurrent matrix: that variant only
    W_bad = W_hh.clone()
    W_bad[1, 4, 7] = float("nan")
    y = rollout(W_bad, W_xh, W_hy, x, **extra, backend=backend)
    assert y[1].isnan().all()
    assert torch.equal(y[[0, 2]], clean[[0, 2]])


def test_rollout_reference_is_differentiable():
    args, extra = make_problem(2, 3, 4, 5, per_variant=True)
    inputs = [t.clone().requires_grad_() for t in (*args, *extra.values())]
    names = list(extra)

    def f(W_hh, W_xh, W_hy, x, *rest):
        return rollout(W_hh, W_xh, W_hy, x, **dict(zip(names, rest, strict=True)))

    assert _resolve_backend("auto", inputs) == "reference"
    assert torch.autograd.gradcheck(f, inputs)


def test_rollout_auto_picks_the_fused_cpu_kernel():
    args, _ = make_problem(2, 3, 4, 5)
    assert _resolve_backend("auto", list(args)) == "cpu"
    torch.testing.assert_close(
        rollout(*args), rollout(*args, backend="reference"), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_rollout_empty_sequence(backend):
    args, extra = make_problem(2, 3, 0, 5, dtype=torch.float32)
    y, h = rollout(*args, **extra, backend=backend, return_hidden=True)
    assert y.shape == (2, 3, 0, 2) and h.shape == (2, 3, 0, 5)


def test_rollout_errors():
    (W_hh, W_xh, W_hy, x), _ = make_problem(2, 3, 4, 5)

    with pytest.raises(ValueError, match=r"W_hh: expected shape \[V, H, H\]"):
        rollout(W_hh[:, :, :4], W_xh, W_hy, x)
    with pytest.raises(ValueError, match=r"W_xh: expected shape \[5, 3\] or \[2, 5, 3\]"):
        rollout(W_hh, W_xh[:, :2], W_hy, x)
    with pytest.raises(ValueError, match=r"W_hy: expected shape \[2, 5\] or \[2, 2, 5\]"):
        rollout(W_hh, W_xh, W_hy[:, :4], x)
    with pytest.raises(ValueError, match=r"W_hy: expected shape \[O, H\]"):
        rollout(W_hh, W_xh, W_hy[0, 0], x)
    with pytest.raises(ValueError, match=r"x: expected shape \[B, L, I\]"):
        rollout(W_hh, W_xh, W_hy, x[0])
    with pytest.raises(ValueError, match=r"h0: expected shape \[3, 5\] or \[2, 3, 5\]"):
        rollout(W_hh, W_xh, W_hy, x, h0=torch.zeros(4, 5, dtype=x.dtype))
    with pytest.raises(ValueError, match=r"b: expected shape \[5\] or \[2, 5\]"):
        rollout(W_hh, W_xh, W_hy, x, b=torch.zeros(3, 5, dtype=x.dtype))
    with pytest.raises(ValueError, match=r"c: expected shape \[2\] or \[2, 2\]"):
        rollout(W_hh, W_xh, W_hy, x, c=torch.zeros(5, dtype=x.dtype))

    with pytest.raises(TypeError, match=r"x: expected dtype torch.float64 .* got torch.float32"):
        rollout(W_hh, W_xh, W_hy, x.float())
    with pytest.raises(TypeError, match=r"W_hh: expected dtype torch.float32 or torch.float64"):
        rollout(W_hh.int(), W_xh, W_hy, x)
    with pytest.raises(TypeError, match=r"W_xh: expected a torch.Tensor, got ndarray"):
        rollout(W_hh, W_xh.numpy(), W_hy, x)
    with pytest.raises(ValueError, match=r"W_hy: expected device cpu"):
        rollout(W_hh, W_xh, W_hy.to("meta"), x)

    with pytest.raises(ValueError, match=r"backend: expected one of"):
        rollout(W_hh, W_xh, W_hy, x, backend="cuda")
    with pytest.raises(ValueError, match=r"not differentiable"):
        rollout(W_hh.requires_grad_(), W_xh, W_hy, x, backend="cpu")
    with pytest.raises(ValueError, match=r"float32 only"):
        rollout(W_hh.detach(), W_xh, W_hy, x, backend="triton")


def test_rollout_cpu_binding_checks_shapes_by_name():
    W = np.zeros((2, 4, 4), np.float32)
    W_xh = np.zeros((4, 3), np.float32)
    W_hy = np.zeros((2, 4), np.float32)
    x = np.zeros((3, 5, 3), np.float32)
    y = np.zeros((2, 3, 5, 2), np.float32)
    with pytest.raises(ValueError, match=r"W_xh: expected shape \[4, 3\] or \[2, 4, 3\]"):
        _core.rollout_cpu(W, W_xh[:, :2].copy(), W_hy, x, y)
    with pytest.raises(ValueError, match=r"x: expected shape \[3, 5, I\]"):
        _core.rollout_cpu(W, W_xh, W_hy, x[:2].copy(), y)
    with pytest.raises(TypeError):
        _core.rollout_cpu(W, W_xh, W_hy, x.astype(np.float64), y)


def test_tanh_f32_error_is_within_two_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-12, 12, 1 << 20),
            rng.uniform(-0.7, 0.7, 1 << 20),
            np.geomspace(1e-38, 20, 1 << 18),
            -np.geomspace(1e-38, 20, 1 << 18),
            [0.625, -0.625, np.nextafter(0.625, 0), 9.0, 10.0, 1e-45, 0.0, -0.0],
        ]
    ).astype(np.float32)
    y = _core.tanh_f32(x)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    err = np.abs(y - exact) / ulp
    assert err.max() <= 2.0, f"max error {err.max():.2f} ulp at x = {x[np.argmax(err)]}"
    assert np.array_equal(_core.tanh_f32(np.array([np.inf, -np.inf], np.float32)), [1, -1])
    assert np.isnan(_core.tanh_f32(np.array([np.nan], np.float32))).all()


@pytest.mark.parametrize("B", [0, 1, 5, 16, 17, 100, 1000])
@pytest.mark.parametrize("H", [1, 3, 16, 17, 50, 64, 65, 72, 100, 128, 129, 256, 300])
@pytest.mark.parametrize("O", [1, 3, 16, 17])
def test_triton_block_sizes_pad_to_powers_of_two(B, H, O):
    blocks = rt.block_sizes(B, H, O)
    for name in ("BLOCK_B", "HP", "OP", "BLOCK_K"):
        n = getattr(blocks, name)
        assert n >= 16 and n & (n - 1) == 0, f"{name} = {n} is not a power of two >= 16"
    # the smallest such power: 16, or below twice the size
    assert blocks.HP >= H and (blocks.HP == 16 or blocks.HP < 2 * H)
    assert blocks.OP >= O and (blocks.OP == 16 or blocks.OP < 2 * O)
    assert blocks.HP % blocks.BLOCK_K == 0
    assert blocks.resident == (blocks.HP <= rt.MAX_RESIDENT_H)
    assert blocks.num_warps in (4, 8)


COMPILE_SCRIPT = """
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile
from schurfast.kernels import rollout_triton as rt

flags = dict(U_PER_V=False, HAS_B=True, B_PER_V=True, HAS_H0=True, H0_PER_V=False,
             WY_PER_V=True, HAS_C=True, C_PER_V=False, STORE_H=True)
for H in (3, 64, 200):
    blocks = rt.block_sizes(33, H, 2)
    kernel = rt._rollout_resident if blocks.resident else rt._rollout_streamed
    consts = dict(flags, BLOCK_B=blocks.BLOCK_B, HP=blocks.HP, OP=blocks.OP, PRECISION="ieee")
    if not blocks.resident:
        consts["BLOCK_K"] = blocks.BLOCK_K
    names = kernel.arg_names
    signature = {n: "constexpr" if n in consts else ("i32" if n in ("B", "L", "H", "O")
                 else "*fp32") for n in names}
    constexprs = {(i,): consts[n] for i, n in enumerate(names) if n in consts}
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    options = {"num_warps": blocks.num_warps, "enable_fp_fusion": True}
    compiled = compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    assert len(compiled.asm["cubin"]) > 0
    print(kernel.__name__, H, "ok")
"""


def test_triton_kernels_compile_for_a_real_gpu():
    # the interpreter accepts shapes the compiler rejects, so compile both kernels for sm_90
    # (no GPU needed), in a process where triton.jit is not the interpreter
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ok") == 3


def test_rollout_is_exported():
    assert schurfast.rollout is rollout


@pytest.mark.parametrize("missing", ["W_hh", "W_xh", "W_hy", "x"])
def test_rollout_refuses_none_for_required_arguments(missing):
    args = {
        "W_hh": torch.zeros(1, 3, 3),
        "W_xh": torch.zeros(3, 2),
        "W_hy": torch.zeros(1, 3),
        "x": torch.zeros(1, 4, 2),
    }
    args[missing] = None
    with pytest.raises(TypeError, match=f"{missing}: expected a torch.Tensor, got NoneType"):
        rollout(**args)


@pytest.mark.parametrize("flag", ["no", 1, 0, None, np.bool_(True), torch.tensor(True)])
def test_rollout_return_hidden_must_be_a_bool(flag):
    (W_hh, W_xh, W_hy, x), _ = make_problem(2, 3, 4, 5)
    with pytest.raises(TypeError, match="return_hidden: expected True or False, got"):
        rollout(W_hh, W_xh, W_hy, x, return_hidden=flag)
