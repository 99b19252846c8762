import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import schurfast
from schurfast import _core
from schurfast.schur import SCHUR_REFUSED_TIE_RTOL, SCHUR_TIE_RTOL

EPS = np.finfo(np.float64).eps
CASES = json.loads((Path(__file__).parent / "data" / "schur_cases.json").read_text())
CASES_BY_NAME = {case["name"]: case for case in CASES}


def _random_orthogonal(rng, H):
    Q, R = np.linalg.qr(rng.standard_normal((H, H)))
    return Q * np.sign(np.diag(R))


def _rotation(r, theta):
    return r * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def make_matrix(kind, H, seed):
    """A matrix of the given kind, and its eigenvalue condition number when known (normal)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal((H, H)) / np.sqrt(H), None
    if kind == "orthogonal":
        return _random_orthogonal(rng, H), 1.0
    if kind == "normal_repeated_pairs":
        # two distinct pairs, each repeated, plus a real eigenvalue for odd H
        pairs = [_rotation(rng.uniform(0.3, 1.5), rng.uniform(0.1, 3.0)) for _ in range(2)]
        blocks = [pairs[i % 2] for i in range(H // 2)] + [np.eye(H % 2) * 0.7]
        Q0 = _random_orthogonal(rng, H)
        return Q0 @ scipy.linalg.block_diag(*blocks) @ Q0.T, 1.0
    if kind == "permutation":
        return np.eye(H)[rng.permutation(H)], 1.0
    if kind == "nearly_defective":
        T = np.triu(rng.standard_normal((H, H)), 1) + np.diag(
            rng.choice([0.5, -0.9, 1.2], H) + 1e-9 * rng.standard_normal(H)
        )
        Q0 = _random_orthogonal(rng, H)
        return Q0 @ T @ Q0.T, None
    if kind == "jordan":
        T = np.zeros((H, H))
        i = 0
        while i < H:
            k = min(H - i, int(rng.integers(1, 5)))
            T[i : i + k, i : i + k] = rng.choice([0.5, -0.5, 1.0, 0.0]) * np.eye(k) + np.eye(k, k=1)
            i += k
        Q0 = _random_orthogonal(rng, H)
        return Q0 @ T @ Q0.T, None
    if kind == "triangular":
        return np.triu(rng.standard_normal((H, H))), None
    if kind == "diagonal_sign_ties":
        return np.diag(rng.choice([-1.0, 1.0], H) * rng.choice([0.5, 1.0, 2.0], H)), 1.0
    if kind == "scaled_tiny":
        return 1e-150 * rng.standard_normal((H, H)), None
    if kind == "scaled_huge":
        return 1e150 * rng.standard_normal((H, H)), None
    raise AssertionError(kind)


KINDS = (
    "gaussian",
    "orthogonal",
    "normal_repeated_pairs",
    "permutation",
    "nearly_defective",
    "jordan",
    "triangular",
    "diagonal_sign_ties",
    "scaled_tiny",
    "scaled_huge",
)


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _block_modulus(T, i, size):
    if size == 1:
        return abs(T[i, i])
    return np.hypot(T[i, i], np.sqrt(abs(T[i, i + 1])) * np.sqrt(abs(T[i + 1, i])))


def check_one(W, Q, T, eigenvalues, block_sizes, moduli, accepted, kappa=None):
    """Every property of an ordered real Schur form of one matrix W [H, H]."""
    H = W.shape[0]
    if H == 0:
        return

    # an exact power-of-two scale keeps the checks of huge and tiny matrices in range
    max_abs = np.abs(W).max()
    scale = np.ldexp(1.0, -int(np.frexp(max_abs)[1])) if max_abs > 0 else 1.0
    W_s, T_s = W * scale, T * scale
    norm = np.linalg.norm(W_s)

    residual = np.linalg.norm(Q @ T_s @ Q.T - W_s)
    assert residual <= 10 * H * EPS * norm, f"reconstruction {residual:.3e}, norm {norm:.3e}"
    orthogonality = np.linalg.norm(Q.T @ Q - np.eye(H))
    assert orthogonality <= 10 * H * EPS, f"orthogonality {orthogonality:.3e}"

    # quasi-triangular, no two adjacent 2x2 blocks overlapping
    assert not np.tril(T, -2).any(), "nonzero below the first subdiagonal"
    sub = np.diagonal(T, offset=-1) != 0
    assert not (sub[1:] & sub[:-1]).any(), "overlapping 2x2 blocks"

    i = 0
    while i < H:
        size = 2 if i + 1 < H and T[i + 1, i] != 0 else 1
        assert list(block_sizes[i : i + size]) == [size] * size, f"block sizes at {i}"
        modulus = _block_modulus(T_s, i, size) / scale
        np.testing.assert_allclose(moduli[i : i + size], modulus, rtol=4 * EPS, atol=0)
        if size == 1:
            assert eigenvalues[i] == T[i, i]
        else:
            a, b, c, d = T[i, i], T[i, i + 1], T[i + 1, i], T[i + 1, i + 1]
            assert a == d and np.sign(b) * np.sign(c) < 0, f"2x2 block at {i} not standardized"
            assert eigenvalues[i].real == eigenvalues[i + 1].real == a
            assert eigenvalues[i].imag > 0 and eigenvalues[i + 1].imag == -eigenvalues[i].imag
        i += size

    # nonincreasing up to ties (near ties where a refused exchange was accepted)
    rtol = SCHUR_TIE_RTOL if accepted == 0 else SCHUR_REFUSED_TIE_RTOL
    assert np.all(moduli[1:] <= moduli[:-1] * (1 + rtol)), f"moduli not ordered: {moduli}"

    # moduli against numpy's eigenvalues, within the eigenvalue condition number
    if kappa is None:
        values, left, right = scipy.linalg.eig(W_s, left=True, right=True)
        overlap = np.abs(np.sum(left.conj() * right, axis=0))
        kappa = np.max(1.0 / np.maximum(overlap, 1e-300))
    else:
        values = np.linalg.eigvals(W_s)
    if kappa < 1e6:
        expected = np.sort(np.abs(values))[::-1]
        error = np.max(np.abs(np.sort(moduli * scale)[::-1] - expected))
        assert error <= 100 * H * EPS * norm * kappa, f"moduli off by {error:.3e}"


def check_schur(W, F, kappa=None):
    """check_one for every matrix of a batch; shapes and dtypes of the result."""
    W = _np(W).astype(np.float64)
    H = W.shape[-1]
    batch = W.shape[:-2]
    assert F.T.shape == F.Q.shape == W.shape
    assert F.eigenvalues.shape == F.moduli.shape == F.block_sizes.shape == batch + (H,)
    assert F.status.shape == batch and (F.status == "ok").all()

    arrays = [_np(x) for x in (F.Q, F.T, F.eigenvalues, F.block_sizes, F.moduli, F.accepted)]
    assert arrays[0].dtype == arrays[1].dtype == arrays[4].dtype == np.float64
    assert arrays[2].dtype == np.complex128
    M = int(np.prod(batch, dtype=np.int64))
    flat = [x.reshape((M,) + x.shape[len(batch) :]) for x in arrays]
    for m, W_m in enumerate(W.reshape(M, H, H)):
        check_one(W_m, *(x[m] for x in flat), kappa=kappa)


sizes = st.one_of(st.integers(1, 12), st.integers(13, 80), st.integers(81, 300))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(kind=st.sampled_from(KINDS), H=sizes, seed=st.integers(0, 2**32 - 1))
@example(kind="gaussian", H=300, seed=0)
@example(kind="jordan", H=300, seed=1)
@example(kind="triangular", H=300, seed=2)
def test_ordered_schur_properties(kind, H, seed):
    W, kappa = make_matrix(kind, H, seed)
    check_schur(W, schurfast.ordered_schur(W), kappa=kappa)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
    H=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_ordered_schur_batch_equals_one_at_a_time(kinds, H, seed):
    W = np.stack([make_matrix(kind, H, seed + k)[0] for k, kind in enumerate(kinds)])
    batch = schurfast.ordered_schur(W)
    check_schur(W, batch)
    for m in range(len(kinds)):
        alone = schurfast.ordered_schur(W[m])
        for name in ("Q", "T", "eigenvalues", "moduli", "block_sizes"):
            assert np.array_equal(getattr(batch, name)[m], getattr(alone, name)), name


def test_ordered_schur_orthogonal_keeps_schur_step_order():
    # all moduli tie: T is exactly LAPACK's unsorted form, the same on every run
    W = make_matrix("orthogonal", 61, seed=5)[0]
    unsorted = _core.ordered_schur(W[None], reorder=False)["T"][0]
    first, second = schurfast.ordered_schur(W), schurfast.ordered_schur(W)
    assert np.array_equal(first.T, unsorted)
    assert np.array_equal(first.T, second.T) and np.array_equal(first.Q, second.Q)


def test_ordered_schur_keeps_conjugate_pairs():
    # pairs of moduli 1.2 (twice) and 0.4 (twice) around a real 0.7: all stay whole 2x2 blocks
    blocks = [_rotation(0.4, 1.0), _rotation(1.2, 2.0), np.eye(1) * 0.7]
    blocks += [_rotation(0.4, 1.0), _rotation(1.2, 2.0)]
    Q0 = _random_orthogonal(np.random.default_rng(3), 9)
    F = schurfast.ordered_schur(Q0 @ scipy.linalg.block_diag(*blocks) @ Q0.T)

    assert list(F.block_sizes) == [2, 2, 2, 2, 1, 2, 2, 2, 2]
    np.testing.assert_allclose(F.moduli, [1.2] * 4 + [0.7] + [0.4] * 4, rtol=1e-13)
    firsts = F.eigenvalues[[0, 2, 5, 7]]
    assert np.all(firsts.imag > 0)
    assert np.array_equal(F.eigenvalues[[1, 3, 6, 8]], firsts.conj())


def test_ordered_schur_torch_in_torch_out():
    W = torch.from_numpy(make_matrix("gaussian", 17, seed=1)[0]).float().reshape(1, 17, 17)
    W = W.expand(2, 3, 17, 17).contiguous() * torch.arange(1, 7).reshape(2, 3, 1, 1)
    F = schurfast.ordered_schur(W)
    assert isinstance(F.T, torch.Tensor) and F.T.dtype == torch.float64
    assert F.eigenvalues.dtype == torch.complex128 and F.T.shape == (2, 3, 17, 17)
    assert F.dtype == torch.float32
    check_schur(W, F)
    from_numpy = schurfast.ordered_schur(W.double().numpy())
    assert np.array_equal(F.T.numpy(), from_numpy.T)


@pytest.mark.parametrize("dtype", [">f8", ">f4", "<f8"])
def test_ordered_schur_takes_either_byte_order(dtype):
    W = np.stack([make_matrix("gaussian", 9, seed=k)[0] for k in range(3)]).astype(dtype)
    native = W.astype(W.dtype.newbyteorder("="))
    F, G = schurfast.ordered_schur(W), schurfast.ordered_schur(native)
    for name in ("Q", "T", "eigenvalues", "moduli", "block_sizes", "status"):
        assert np.array_equal(getattr(F, name), getattr(G, name)), name
    assert F.dtype == G.dtype == native.dtype and F.dtype.isnative


def test_ordered_schur_huge_entries():
    W = 1e307 * np.random.default_rng(0).standard_normal((3, 20, 20))
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.linalg.norm(W[0]))
    check_schur(W, schurfast.ordered_schur(W))


def test_ordered_schur_empty_results_without_lapack(monkeypatch):
    def no_lapack(*args, **kwargs):
        raise AssertionError("LAPACK must not run on empty input")

    monkeypatch.setattr(schurfast.schur._core, "ordered_schur", no_lapack)
    for shape in [(0, 0), (3, 0, 0), (0, 5, 5), (2, 0, 4, 4)]:
        F = schurfast.ordered_schur(np.zeros(shape))
        assert F.T.shape == F.Q.shape == shape
        assert F.moduli.shape == F.eigenvalues.shape == shape[:-1]
        assert F.status.shape == shape[:-2]


def test_ordered_schur_errors(monkeypatch):
    with pytest.raises(TypeError, match="numpy.ndarray or torch.Tensor"):
        schurfast.ordered_schur([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TypeError, match="complex128"):
        schurfast.ordered_schur(np.eye(3, dtype=np.complex128))
    with pytest.raises(TypeError, match="int64"):
        schurfast.ordered_schur(np.eye(3, dtype=np.int64))
    with pytest.raises(TypeError, match="float32 or float64 array, got >i8"):
        schurfast.ordered_schur(np.eye(3, dtype=">i8"))
    with pytest.raises(TypeError, match="float32 or float64 array, got float16"):
        schurfast.ordered_schur(np.eye(3, dtype=np.float16))
    with pytest.raises(TypeError, match="complex64"):
        schurfast.ordered_schur(torch.eye(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"got shape \[4\]"):
        schurfast.ordered_schur(np.ones(4))
    with pytest.raises(ValueError, match=r"got shape \[2, 3, 4\]"):
        schurfast.ordered_schur(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="on_error"):
        schurfast.ordered_schur(np.eye(2), on_error="ignore")

    # a non-finite entry names the matrix, and LAPACK never sees it
    def no_lapack(*args, **kwargs):
        raise AssertionError("LAPACK must not run on non-finite input")

    monkeypatch.setattr(schurfast.schur._core, "ordered_schur", no_lapack)
    W = np.ones((2, 3, 4, 4))
    W[1, 2, 0, 3] = np.inf
    with pytest.raises(ValueError, match=r"W\[1, 2\] .*NaN or Inf"):
        schurfast.ordered_schur(W)


# Schur forms with nearly defective 2x2 blocks (|b / c| far from 1) on which LAPACK's block
# exchange refuses to move the second block above the first
NEAR_TIE = np.array(
    [
        [1.0, 2.0**-30, 1.0, 1.0],
        [-(2.0**10), 1.0, -1.0, 1.0],
        [0.0, 0.0, 1 + 2.0**-24, 2.0**-30 * (1 + 2.0**-24)],
        [0.0, 0.0, -(2.0**10) * (1 + 2.0**-24), 1 + 2.0**-24],
    ]
)
RECOVERABLE = np.array(
    [
        [1.0, 8.0009e-11, 208000.0, -302110.0],
        [-30491.0, 1.0, -707200.0, -407410.0],
        [0.0, 0.0, 1.0001, 1.4434e-07],
        [0.0, 0.0, -16.908, 1.0001],
    ]
)


def test_ordered_schur_accepts_refused_near_ties():
    # moduli 1 apart by 2^-24 relative: inseparable, the refusal is accepted and counted
    alone = _core.reorder_schur_form(NEAR_TIE, np.eye(4))
    assert alone["ok"] and alone["refused"] == alone["accepted"] == 1
    F = schurfast.ordered_schur(NEAR_TIE)
    assert F.refused >= 1 and F.accepted >= 1 and F.restarts == 0
    check_schur(NEAR_TIE, F)


def test_ordered_schur_recovers_refused_exchange():
    # the exchange alone fails; a fresh decomposition after a reflection succeeds
    alone = _core.reorder_schur_form(RECOVERABLE, np.eye(4))
    assert not alone["ok"] and (alone["fail_first"], alone["fail_second"]) == (0, 2)
    F = schurfast.ordered_schur(RECOVERABLE)
    assert F.status == "ok" and F.refused >= 1 and F.restarts >= 1
    check_schur(RECOVERABLE, F)


def test_ordered_schur_refused_exchange_names_the_matrix():
    # Without fresh decompositions the refusal stands. RECOVERABLE is already in Schur form, so
    # dgees leaves it as it is and the outcome does not depend on the BLAS kernels of the CPU
    # (whether a fresh decomposition in another basis is refused again does).
    W = np.stack([NEAR_TIE, RECOVERABLE, np.diag([0.5, 2.0, -1.0, 3.0])])
    with pytest.raises(schurfast.SchurError, match=r"rows 0 and 2 of W\[1\]") as info:
        schurfast.ordered_schur(W, max_restarts=0)
    assert info.value.index == (1,) and info.value.blocks == (0, 2)
    assert "0 fresh decompositions tried" in str(info.value)

    # with on_error="status" the other matrices come back; the failed one is NaN, never unsorted
    F = schurfast.ordered_schur(W, on_error="status", max_restarts=0)
    assert list(F.status) == ["ok", "exchange_refused", "ok"]
    assert list(F.ok) == [True, False, True]
    assert np.isnan(F.T[1]).all() and np.isnan(F.Q[1]).all() and np.isnan(F.moduli[1]).all()
    assert np.isnan(F.eigenvalues[1]).all() and not F.block_sizes[1].any()
    assert F.refused[1] == 1 and F.restarts[1] == 0
    for m in (0, 2):
        args = (F.Q[m], F.T[m], F.eigenvalues[m], F.block_sizes[m], F.moduli[m], F.accepted[m])
        check_one(W[m], *args)

    # the default tries fresh decompositions and recovers the same matrix
    F = schurfast.ordered_schur(W, on_error="status")
    assert list(F.status) == ["ok", "ok", "ok"] and F.restarts[1] >= 1


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (65, ValueError), (1.0, TypeError), (True, TypeError)]
)
def test_ordered_schur_max_restarts_is_checked(value, error):
    with pytest.raises(error, match="max_restarts"):
        schurfast.ordered_schur(np.eye(2), max_restarts=value)


@pytest.mark.parametrize("name", sorted(CASES_BY_NAME))
def test_schur_case(name):
    case = CASES_BY_NAME[name]
    W = np.array(case["matrix"], dtype=np.float64).reshape(case["shape"])

    if case["expect"] == "ValueError":
        match = r"\[2, 3\]" if name == "not_square" else "NaN or Inf"
        with pytest.raises(ValueError, match=match):
            schurfast.ordered_schur(W)
        return

    F = schurfast.ordered_schur(W)
    check_schur(W, F)
    np.testing.assert_allclose(F.moduli, case["moduli"], rtol=case["moduli_tol"], atol=0)
    assert F.refused == 0
    if name in ("identity", "minus_identity", "zeros", "one_by_one"):
        assert np.array_equal(F.T, W) and np.array_equal(F.Q, np.eye(len(W)))
    if name == "cyclic_permutation_7":
        assert list(F.block_sizes).count(2) == 6
        again = schurfast.ordered_schur(W)
        assert np.array_equal(F.T, again.T) and np.array_equal(F.Q, again.Q)


def test_ordered_schur_refuses_forms_that_overflow():
    huge = np.full((3, 3), np.finfo(np.float64).max)
    with pytest.raises(schurfast.SchurError, match="overflows float64") as caught:
        schurfast.ordered_schur(huge)
    assert caught.value.index == ()

    F = schurfast.ordered_schur(np.stack([np.eye(3), huge]), on_error="status")
    assert F.status.tolist() == ["ok", "overflow"]
    assert np.isnan(F.T[1]).all()
    np.testing.assert_array_equal(F.T[0], np.eye(3))
