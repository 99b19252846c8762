import numpy as np
import pytest
import scipy.linalg
import torch

import schurfast
from schurfast.ablation import ALL_SUBSETS, BLOCKS

EPS = np.finfo(np.float64).eps


def _rotation(r, theta):
    return r * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


# moduli 1.0 (real), 0.95 (pair), 0.6 (real, negative), 0.3 (pair), 0.1 (real)
KNOWN_BLOCKS = [
    np.array([[1.0]]),
    _rotation(0.95, 0.8),
    np.array([[-0.6]]),
    _rotation(0.3, 2.0),
    np.array([[0.1]]),
]
KNOWN_MODULI = [1.0, 0.95, 0.95, 0.6, 0.3, 0.3, 0.1]
KNOWN_EIGENVALUES = np.concatenate([np.linalg.eigvals(b) for b in KNOWN_BLOCKS])


def known_spectrum(seed, coupling=0.5):
    """W = Q0 (D0 + couplings) Q0^T: the eigenvalues are those of KNOWN_BLOCKS."""
    rng = np.random.default_rng(seed)
    D0 = scipy.linalg.block_diag(*KNOWN_BLOCKS)
    H = len(D0)
    block_id = np.repeat(np.arange(len(KNOWN_BLOCKS)), [len(b) for b in KNOWN_BLOCKS])
    upper = block_id[:, None] < block_id[None, :]
    T0 = D0 + coupling * np.where(upper, rng.standard_normal((H, H)), 0.0)
    Q0, _ = np.linalg.qr(rng.standard_normal((H, H)))
    return Q0 @ T0 @ Q0.T


def _sorted_eigenvalues(W):
    values = np.linalg.eigvals(W)
    return values[np.lexsort((values.imag, values.real))]


@pytest.mark.parametrize("subset", ALL_SUBSETS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_ablate_keeps_eigenvalues(subset, alpha):
    W = np.stack([known_spectrum(seed) for seed in range(3)])
    F = schurfast.ordered_schur(W)
    W_S = schurfast.ablate(F, subset, alpha=alpha)

    assert W_S.shape == W.shape and W_S.dtype == np.float64
    expected = KNOWN_EIGENVALUES[np.lexsort((KNOWN_EIGENVALUES.imag, KNOWN_EIGENVALUES.real))]
    for m in range(len(W)):
        np.testing.assert_allclose(_sorted_eigenvalues(W_S[m]), expected, atol=1e-9)
        # and the ablated matrix keeps F's own eigenvalues, in Schur coordinates exactly
        assert np.allclose(np.sort_complex(F.eigenvalues[m]), np.sort_complex(expected))


@pytest.mark.parametrize("subset", ALL_SUBSETS)
def test_ablate_removes_exactly_the_blocks(subset):
    rng = np.random.default_rng(7)
    W = rng.standard_normal((4, 23, 23)) / np.sqrt(23)
    F = schurfast.ordered_schur(W)
    S = schurfast.sectors(F, alpha=0.8)
    removed = [getattr(S, "N_" + name) for name in BLOCKS if name in subset.split("+")]
    delta_norm = np.linalg.norm(sum(removed, np.zeros_like(F.T)), axis=(1, 2))

    W_S = schurfast.ablate(F, subset, alpha=0.8)
    change = np.linalg.norm(W - W_S, axis=(1, 2))
    np.testing.assert_allclose(change, delta_norm, rtol=0, atol=50 * 23 * EPS)

    W_all, table = schurfast.ablation_variants(F, [subset], [0.8])
    np.testing.assert_allclose(table["delta_norm"], delta_norm, rtol=1e-14, atol=0)
    np.testing.assert_allclose(
        table["mass"], delta_norm / np.linalg.norm(W, axis=(1, 2)), rtol=1e-12, atol=0
    )
    np.testing.assert_allclose(W_all, W_S, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "alpha, n_R", [(0.0, 7), (0.05, 7), (0.2, 6), (0.5, 4), (0.9, 3), (0.96, 1), (1.0, 1)]
)
def test_sectors_n_R_on_known_spectra(alpha, n_R):
    W = np.stack([known_spectrum(seed) for seed in range(4)])
    F = schurfast.ordered_schur(W)
    np.testing.assert_allclose(F.moduli, np.broadcast_to(KNOWN_MODULI, (4, 7)), rtol=1e-9)
    assert list(schurfast.sectors(F, alpha=alpha).n_R) == [n_R] * 4


def test_the_block_attaining_rho_is_leading_even_behind_a_tie():
    # orthogonal matrices: every modulus is 1 up to rounding, in LAPACK's order
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 16, 16)))[0]
    assert list(schurfast.sectors(schurfast.ordered_schur(Q), alpha=1.0).n_R) == [16] * 5
    # 1 - 1e-13 and 1 are a tie and keep their order; rho = 1 is the second
    F = schurfast.ordered_schur(np.diag([1 - 1e-13, 1.0, 0.5]))
    assert F.moduli[1] == 1.0
    assert schurfast.sectors(F, alpha=1.0).n_R == 2
    assert schurfast.sectors(F, alpha=0.9).n_R == 2


def test_sectors_never_split_a_pair():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((20, 15, 15)) / np.sqrt(15)
    F = schurfast.ordered_schur(W)
    for alpha in np.linspace(0.0, 1.0, 41):
        n_R = schurfast.sectors(F, alpha=alpha).n_R
        for m in range(len(W)):
            cut = n_R[m]
            if 0 < cut < 15:
                # rows cut - 1 and cut share a 2x2 block exactly when T[cut, cut - 1] != 0
                assert F.T[m, cut, cut - 1] == 0, (m, alpha, cut)
    assert (F.block_sizes == 2).any()


def test_sectors_split_T():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((2, 3, 12, 12)) / np.sqrt(12)
    F = schurfast.ordered_schur(W)
    S = schurfast.sectors(F, alpha=0.7)

    assert S.n_R.shape == (2, 3) and S.D.shape == (2, 3, 12, 12)
    assert np.array_equal(S.D + S.N, F.T)
    assert np.array_equal(S.N_RR + S.N_RC + S.N_CC, S.N)
    for index in np.ndindex(2, 3):
        n_R, N = S.n_R[index], S.N[index]
        assert not np.tril(N).any()
        assert not S.N_RC[index][n_R:].any() and not S.N_RC[index][:, :n_R].any()
        assert not S.N_RR[index][n_R:].any() and not S.N_RR[index][:, n_R:].any()
        assert not S.N_CC[index][:n_R].any() and not S.N_CC[index][:, :n_R].any()
        assert np.array_equal(S.N_RC[index][:n_R, n_R:], N[:n_R, n_R:])
        # D holds the diagonal blocks only
        D, i = np.zeros((12, 12)), 0
        while i < 12:
            size = F.block_sizes[index][i]
            D[i : i + size, i : i + size] = F.T[index][i : i + size, i : i + size]
            i += size
        assert np.array_equal(S.D[index], D)


def test_ablation_variants_table_and_order():
    W = np.stack([known_spectrum(seed) for seed in range(3)])
    F = schurfast.ordered_schur(W)
    alphas = [0.5, 0.9]
    W_all, table = schurfast.ablation_variants(F, ALL_SUBSETS, alphas)

    assert W_all.shape == (3 * 2 * 8, 7, 7) and len(table) == 48
    assert list(table.columns) == ["matrix", "subset", "alpha", "n_R", "delta_norm", "mass"]
    assert list(table["matrix"]) == sorted(table["matrix"])
    assert set(table["subset"]) == set(ALL_SUBSETS)
    for v, row in table.iterrows():
        expected = schurfast.ablate(F, row["subset"], alpha=row["alpha"])[row["matrix"]]
        np.testing.assert_allclose(W_all[v], expected, rtol=0, atol=1e-15)
        assert row["n_R"] == {0.5: 4, 0.9: 3}[row["alpha"]]
        assert (row["delta_norm"] == 0) == (row["subset"] == "none")
    # the full ablation removes all of N
    full = table[table["subset"] == "RR+RC+CC"]
    N_norm = np.linalg.norm(schurfast.sectors(F).N, axis=(1, 2))
    np.testing.assert_allclose(full["delta_norm"].to_numpy()[::2], N_norm, rtol=1e-14)


def test_ablation_subsets_accept_block_names():
    F = schurfast.ordered_schur(known_spectrum(0))
    _, table = schurfast.ablation_variants(F, [("RC", "RR"), {"CC"}, "RC+RR", [], "none"], [0.9])
    assert list(table["subset"]) == ["RR+RC", "CC", "RR+RC", "none", "none"]
    assert np.array_equal(schurfast.ablate(F, ["RC", "RR"]), schurfast.ablate(F, "RR+RC"))


def test_ablate_torch_keeps_dtype_and_kind():
    W = torch.from_numpy(np.stack([known_spectrum(s) for s in range(2)])).float()
    F = schurfast.ordered_schur(W)
    W_S = schurfast.ablate(F, "RC")
    assert isinstance(W_S, torch.Tensor) and W_S.dtype == torch.float32 and W_S.shape == W.shape
    S = schurfast.sectors(F)
    assert isinstance(S.N_RC, torch.Tensor) and S.N_RC.dtype == torch.float64
    W_all, table = schurfast.ablation_variants(F, ["none", "RC"], [0.9])
    assert isinstance(W_all, torch.Tensor) and W_all.dtype == torch.float64
    assert W_all.shape == (4, 7, 7)
    np.testing.assert_allclose(W_all[1].numpy(), W_S[0].numpy(), atol=1e-6)
    # the "none" variant is the reconstruction
    np.testing.assert_allclose(W_all[0].numpy(), W[0].double().numpy(), atol=1e-6)


def test_ablate_numpy_float32_in_float32_out():
    W = known_spectrum(1).astype(np.float32)
    W_S = schurfast.ablate(schurfast.ordered_schur(W), "RR+CC", alpha=0.5)
    assert W_S.dtype == np.float32 and W_S.shape == (7, 7)


def test_sectors_errors():
    F = schurfast.ordered_schur(np.eye(3))
    with pytest.raises(TypeError, match="SchurResult"):
        schurfast.sectors(np.eye(3))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\], got 1.5"):
        schurfast.sectors(F, alpha=1.5)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        schurfast.sectors(F, alpha="0.9")


def test_ablate_errors(monkeypatch):
    F = schurfast.ordered_schur(np.eye(3))
    with pytest.raises(ValueError, match=r"unknown block names \['XY'\]"):
        schurfast.ablate(F, "RR+XY")
    with pytest.raises(ValueError, match="unknown block names"):
        schurfast.ablate(F, ["R"])
    with pytest.raises(TypeError, match="a subset is a string"):
        schurfast.ablate(F, 3)
    with pytest.raises(ValueError, match="alpha"):
        schurfast.ablate(F, "RC", alpha=-0.1)

    # a failed matrix has no sectors; the error names it
    F = schurfast.ordered_schur(np.stack([np.eye(3)] * 2))
    F.status[1] = "exchange_refused"
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        schurfast.ablate(F, "RC")


def test_ablation_variants_errors():
    F = schurfast.ordered_schur(np.eye(3))
    with pytest.raises(TypeError, match="list of subsets"):
        schurfast.ablation_variants(F, "RC", [0.9])
    with pytest.raises(ValueError, match="must not be empty"):
        schurfast.ablation_variants(F, [], [0.9])
    with pytest.raises(ValueError, match="must not be empty"):
        schurfast.ablation_variants(F, ["RC"], [])
    with pytest.raises(ValueError, match="alpha"):
        schurfast.ablation_variants(F, ["RC"], [0.9, 2.0])


def test_ablation_of_empty_matrices_is_empty():
    F = schurfast.ordered_schur(np.zeros((2, 0, 0)))

    assert schurfast.sectors(F).n_R.tolist() == [0, 0]
    assert schurfast.ablate(F, "RC").shape == (2, 0, 0)
    W, table = schurfast.ablation_variants(F, ["RC", "CC"], [0.9])
    assert W.shape == (4, 0, 0)
    assert table["mass"].tolist() == [0.0] * 4
