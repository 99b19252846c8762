"""Sectors of an ordered Schur form and ablations of its coupling blocks.

With ``T = D + N`` (``D`` the diagonal blocks, ``N`` the couplings between blocks),
``rho = max |lambda|`` and a threshold ``alpha``, the leading sector R holds the leading
blocks with modulus ``>= alpha * rho`` (``n_R`` scalar dimensions, a conjugate pair never
split) and C the rest. In the ordered basis::

    N = [[N_RR, N_RC],
         [  0 , N_CC]]

An ablation zeroes a subset S of {RR, RC, CC}: ``W_S = Q (T - Delta_S) Q^T``.

Because ``n_R`` differs between matrices of a batch, ``N_RR``, ``N_RC`` and ``N_CC`` are
returned embedded in ``[..., H, H]`` arrays that are zero outside their block
(``N = N_RR + N_RC + N_CC``); for one matrix ``N_RC[:n_R, n_R:]`` is the block itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from schurfast.schur import SCHUR_TIE_RTOL, SchurResult

__all__ = ["ALL_SUBSETS", "BLOCKS", "Sectors", "ablate", "ablation_variants", "sectors"]

BLOCKS = ("RR", "RC", "CC")

ALL_SUBSETS = ("none", "RR", "RC", "CC", "RR+RC", "RR+CC", "RC+CC", "RR+RC+CC")


@dataclass
class Sectors:
    """Sector split of an ordered Schur form; arrays like the form's ``T`` (float64).

    Attributes:
        alpha: the relative threshold used.
        n_R: int ``[...]``, scalar dimension of the leading sector per matrix.
        D: ``[..., H, H]`` the diagonal blocks of ``T``.
        N: ``[..., H, H]`` the couplings ``T - D``.
        N_RR, N_RC, N_CC: ``[..., H, H]`` the coupling blocks, zero elsewhere.
    """

    alpha: float
    n_R: Any
    D: Any
    N: Any
    N_RR: Any
    N_RC: Any
    N_CC: Any


def _host(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(F: SchurResult, x: np.ndarray, dtype: Any = None) -> Any:
    """x as the kind of array F was computed from (on its device), optionally cast."""
    if F.device is None:
        return x if dtype is None else x.astype(dtype)
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.to(F.device) if dtype is None else t.to(F.device, dtype)


def _check_result(F: Any, caller: str) -> None:
    if not isinstance(F, SchurResult):
        raise TypeError(
            f"{caller}: expected a SchurResult from ordered_schur, got {type(F).__name__}"
        )
    failed = np.flatnonzero(np.asarray(F.status).reshape(-1) != "ok")
    if failed.size:
        index = tuple(int(i) for i in np.unravel_index(int(failed[0]), F.batch_shape))
        raise ValueError(
            f"{caller}: the matrix at batch index {index} has no ordered Schur form "
            f"(status {np.asarray(F.status).reshape(-1)[failed[0]]!r}); drop failed matrices "
            "before splitting sectors"
        )


def _check_alpha(alpha: Any, caller: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"{caller}: alpha must be a real number in [0, 1], got {alpha!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{caller}: alpha must lie in [0, 1], got {alpha!r}")
    return float(alpha)


def _canonical_subset(subset: Any, caller: str) -> str:
    """The canonical string of a subset given as a string or an iterable of block names."""
    if isinstance(subset, str):
        names = [] if subset == "none" else subset.split("+")
    elif isinstance(subset, Iterable):
        names = list(subset)
    else:
        raise TypeError(
            f"{caller}: a subset is a string such as 'RR+RC' or an iterable of block names, "
            f"got {type(subset).__name__}"
        )
    unknown = [name for name in names if name not in BLOCKS]
    if unknown:
        raise ValueError(
            f"{caller}: unknown block names {unknown} in subset {subset!r}; "
            f"blocks are {BLOCKS}, or 'none'"
        )
    chosen = [name for name in BLOCKS if name in names]
    return "+".join(chosen) if chosen else "none"


def _count(F: SchurResult) -> int:
    """Number of matrices in F's batch (explicit, so that H = 0 reshapes too)."""
    return int(np.prod(F.batch_shape, dtype=np.int64))


def _split(F: SchurResult, alpha: float) -> dict[str, np.ndarray]:
    """Host float64 sector split of every matrix, flattened to ``[M, H, H]``."""
    M, H = _count(F), F.H
    T = _host(F.T).reshape(M, H, H)
    moduli = _host(F.moduli).reshape(M, H)

    # i and i + 1 share a block exactly when T[i + 1, i] is nonzero
    subdiagonal = np.diagonal(T, offset=-1, axis1=1, axis2=2) != 0
    starts = np.concatenate([np.ones((T.shape[0], min(H, 1)), bool), ~subdiagonal], axis=1)
    block_id = np.cumsum(starts, axis=1)
    same_block = block_id[:, :, None] == block_id[:, None, :]

    # leading sector: the shortest prefix that holds every block with modulus >= alpha * rho,
    # up to the tie tolerance of the ordering. Ties keep LAPACK's order, so the block attaining
    # rho may follow one smaller by rounding: R still holds both, even at alpha = 1. Both
    # halves of a pair carry the same modulus, so a pair is never split.
    rho = moduli.max(axis=1, initial=0.0)
    leading = moduli >= alpha * rho[:, None] * (1.0 - SCHUR_TIE_RTOL)
    last = H - np.argmax(leading[:, ::-1], axis=1) if H else np.zeros(M, np.int64)
    n_R = np.where(leading.any(axis=1), last, 0).astype(np.int64)
    in_R = np.arange(H)[None, :] < n_R[:, None]

    D = np.where(same_block, T, 0.0)
    N = T - D
    rows_R, cols_R = in_R[:, :, None], in_R[:, None, :]
    return {
        "T": T,
        "n_R": n_R,
        "D": D,
        "N": N,
        "RR": np.where(rows_R & cols_R, N, 0.0),
        "RC": np.where(rows_R & ~cols_R, N, 0.0),
        "CC": np.where(~rows_R & ~cols_R, N, 0.0),
    }


def sectors(F: SchurResult, alpha: float = 0.9) -> Sectors:
    """Leading and complement sectors of an ordered Schur form, and the coupling blocks.

    ``R = {blocks with |lambda| >= alpha * rho}`` (leading), ``T = D + N``. Moduli within
    a relative :data:`~schurfast.schur.SCHUR_TIE_RTOL` are ties: they keep LAPACK's order
    and count as equal here, so R, the first ``n_R`` Schur indices, is the shortest prefix
    that holds every block within that tolerance of ``alpha * rho`` or above, and holds
    every block of modulus rho even at ``alpha = 1``.

    Args:
        F: result of :func:`schurfast.ordered_schur` for ``[..., H, H]``.
        alpha: relative threshold in ``[0, 1]``.

    Returns:
        Sectors: ``n_R`` int ``[...]``; ``D``, ``N``, ``N_RR``, ``N_RC``, ``N_CC`` float64
        ``[..., H, H]`` (blocks embedded, zero elsewhere), numpy or torch like ``F.T``.

    Raises:
        TypeError: F is not a SchurResult, or alpha is not a real number.
        ValueError: alpha outside ``[0, 1]``, or F holds a failed matrix.

    Example:
        >>> import numpy as np, schurfast
        >>> F = schurfast.ordered_schur(np.diag([1.0, 0.95, 0.5]))
        >>> int(sectors(F, alpha=0.9).n_R)
        2
    """
    _check_result(F, "sectors")
    alpha = _check_alpha(alpha, "sectors")
    parts = _split(F, alpha)
    batch, H = F.batch_shape, F.H

    def shaped(x: np.ndarray) -> Any:
        return _like(F, x.reshape(batch + (H, H)))

    return Sectors(
        alpha=alpha,
        n_R=_like(F, parts["n_R"].reshape(batch)),
        D=shaped(parts["D"]),
        N=shaped(parts["N"]),
        N_RR=shaped(parts["RR"]),
        N_RC=shaped(parts["RC"]),
        N_CC=shaped(parts["CC"]),
    )


def _delta(parts: dict[str, np.ndarray], subset: str) -> np.ndarray:
    delta = np.zeros_like(parts["T"])
    if subset != "none":
        for name in subset.split("+"):
            delta += parts[name]
    return delta


def _rebuild(F: SchurResult, T_S: np.ndarray) -> np.ndarray:
    Q = _host(F.Q).reshape(_count(F), F.H, F.H)
    return Q @ T_S @ Q.transpose(0, 2, 1)


def ablate(F: SchurResult, blocks: Any, alpha: float = 0.9) -> Any:
    """Zero the chosen coupling blocks: ``W_S = Q (T - Delta_S) Q^T``.

    Args:
        F: result of :func:`schurfast.ordered_schur` for ``[..., H, H]``.
        blocks: a subset of ``{"RR", "RC", "CC"}``: a string (``"RR+RC"``, ``"none"``) or an
            iterable of block names.
        alpha: relative threshold of the leading sector, in ``[0, 1]``.

    Returns:
        ``[..., H, H]`` ablated matrices in the dtype and kind of the input of
        ``ordered_schur`` (numpy, or torch on its device).

    Raises:
        TypeError, ValueError: as for :func:`sectors`, or unknown block names.

    Example:
        >>> import numpy as np, schurfast
        >>> F = schurfast.ordered_schur(np.array([[1.0, 3.0], [0.0, 0.5]]))
        >>> np.allclose(np.linalg.eigvals(ablate(F, "RC", alpha=0.9)), [1.0, 0.5])
        True
    """
    _check_result(F, "ablate")
    alpha = _check_alpha(alpha, "ablate")
    subset = _canonical_subset(blocks, "ablate")

    parts = _split(F, alpha)
    W_S = _rebuild(F, parts["T"] - _delta(parts, subset))
    return _like(F, W_S.reshape(F.batch_shape + (F.H, F.H)), F.dtype)


def ablation_variants(
    F: SchurResult, subsets: Sequence[Any] = ALL_SUBSETS, alphas: Sequence[float] = (0.9,)
) -> tuple[Any, pd.DataFrame]:
    """Every (matrix, alpha, subset) ablation stacked as one batch of weight variants.

    Variant order: matrix (flat batch index), then alpha, then subset, as listed.
    ``mass = ||Delta_S||_F / ||T||_F`` (0 for a zero matrix). The ``"none"`` variant is the
    reconstruction ``Q T Q^T``, so variants differ from it only by their ablation.

    Args:
        F: result of :func:`schurfast.ordered_schur` for ``[..., H, H]``.
        subsets: canonical strings (see :data:`ALL_SUBSETS`) or iterables of block names.
        alphas: relative thresholds, each in ``[0, 1]``.

    Returns:
        ``(W, table)``: ``W [V, H, H]`` float64 (numpy, or torch on the input's device) and a
        DataFrame with one row per variant and columns ``matrix``, ``subset``, ``alpha``,
        ``n_R``, ``delta_norm``, ``mass``.

    Raises:
        TypeError, ValueError: as for :func:`ablate`, or empty ``subsets``/``alphas``.

    Example:
        >>> import numpy as np, schurfast
        >>> F = schurfast.ordered_schur(np.eye(3))
        >>> W, table = ablation_variants(F, ["none", "RC"], [0.5, 0.9])
        >>> W.shape, len(table)
        ((4, 3, 3), 4)
    """
    _check_result(F, "ablation_variants")
    if isinstance(subsets, str) or not isinstance(subsets, Iterable):
        raise TypeError(
            "ablation_variants: subsets must be a list of subsets such as ['none', 'RC'], "
            f"got {subsets!r}"
        )
    names = [_canonical_subset(s, "ablation_variants") for s in subsets]
    alphas = [_check_alpha(a, "ablation_variants") for a in np.atleast_1d(np.asarray(alphas))]
    if not names or not alphas:
        raise ValueError("ablation_variants: subsets and alphas must not be empty")

    M, H = _count(F), F.H
    T_norm = None
    variants, rows = [], []
    for alpha in alphas:
        parts = _split(F, alpha)
        T_norm = np.linalg.norm(parts["T"], axis=(1, 2)) if T_norm is None else T_norm
        for subset in names:
            delta = _delta(parts, subset)
            variants.append(_rebuild(F, parts["T"] - delta))
            delta_norm = np.linalg.norm(delta, axis=(1, 2))
            mass = np.divide(delta_norm, T_norm, out=np.zeros(M), where=T_norm > 0)
            for m in range(M):
                rows.append((m, subset, alpha, int(parts["n_R"][m]), delta_norm[m], mass[m]))

    # [A, S, M, H, H] -> matrix-major [M, A, S, H, H]
    W = np.stack(variants).reshape(len(alphas), len(names), M, H, H).transpose(2, 0, 1, 3, 4)
    W = W.reshape(M * len(alphas) * len(names), H, H)
    order = np.arange(len(rows)).reshape(len(alphas), len(names), M).transpose(2, 0, 1).ravel()
    columns = ["matrix", "subset", "alpha", "n_R", "delta_norm", "mass"]
    table = pd.DataFrame([rows[i] for i in order], columns=columns)
    return _like(F, np.ascontiguousarray(W)), table
