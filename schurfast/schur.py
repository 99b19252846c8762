"""Ordered real Schur form of recurrent weight matrices, batched, computed in C++ on LAPACK.

``W = Q T Q^T`` with ``Q`` orthogonal and ``T`` quasi-upper-triangular: 1x1 blocks for real
eigenvalues and standardized 2x2 blocks ``[[a, b], [c, a]]`` (``b c < 0``) for conjugate
pairs. The diagonal blocks are sorted by nonincreasing modulus ``|lambda|`` (``sqrt(det)`` for
a 2x2 block).

Order and ties: blocks whose moduli agree within a relative tolerance of
``SCHUR_TIE_RTOL = 1e-12`` are ties and are never exchanged, so they keep the order of the
Schur step (LAPACK's ``dgees``); an orthogonal matrix, whose moduli are all 1, keeps ``T`` as
computed, the same on every run. A block only moves past strictly smaller ones (an insertion
sort with LAPACK's block exchange ``dtrexc``), and the block structure is read again after
every exchange because a nearly defective 2x2 block can split into two real ones.

Refused exchanges: LAPACK refuses to exchange two blocks when the result would not be
backward stable (eigenvalues too close for their coupling). Such a refusal between blocks
whose moduli agree within ``SCHUR_REFUSED_TIE_RTOL = 1e-6`` is accepted (the moduli are
numerically inseparable) and counted in ``accepted``. Otherwise the matrix is decomposed
afresh after a fixed orthogonal similarity (a Householder reflection), at most
``max_restarts`` times (default 2); if every attempt is refused the matrix fails with
:class:`SchurError`, or with ``on_error="status"`` its outputs are NaN and its ``status``
says why. An unsorted ``T`` is never returned.

Limitations: the computation runs on the host in float64 (a CUDA tensor is copied to the
host and the results moved back). OpenMP threads go over the batch and LAPACK runs
single-threaded inside, so a batch of one large matrix uses one core. Matrices whose
largest entry lies outside ``[2^-400, 2^400]`` are scaled by an exact power of two; entries
that the scaling pushes below the smallest normal number lose precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from schurfast import _core

__all__ = [
    "SCHUR_REFUSED_TIE_RTOL",
    "SCHUR_TIE_RTOL",
    "STATUS_NAMES",
    "SchurError",
    "SchurResult",
    "ordered_schur",
]

SCHUR_TIE_RTOL: float = _core.SCHUR_TIE_RTOL
SCHUR_REFUSED_TIE_RTOL: float = _core.SCHUR_REFUSED_TIE_RTOL

# per-matrix status codes of the compiled core, then the ones decided here
STATUS_NAMES = ("ok", "no_convergence", "exchange_refused", "overflow")

_ON_ERROR = ("raise", "status")


class SchurError(RuntimeError):
    """The ordered Schur form of one matrix of a batch could not be computed.

    Attributes:
        index: batch index of the matrix (a tuple over the batch dimensions).
        blocks: start rows of the two diagonal blocks LAPACK refused to exchange, or ``None``
            when the QR iteration itself did not converge or the form overflows float64.
    """

    def __init__(self, message: str, index: tuple[int, ...], blocks: tuple[int, int] | None):
        super().__init__(message)
        self.index = index
        self.blocks = blocks


@dataclass
class SchurResult:
    """Ordered real Schur form of a batch ``[..., H, H]``; see :func:`ordered_schur`.

    ``Q``, ``T``, ``eigenvalues``, ``block_sizes``, ``moduli``, ``refused``, ``accepted`` and
    ``restarts`` are numpy arrays or torch tensors like the input (on its device); ``status``
    is always a numpy array of strings from :data:`STATUS_NAMES`.
    """

    Q: Any
    T: Any
    eigenvalues: Any
    block_sizes: Any
    moduli: Any
    refused: Any
    accepted: Any
    restarts: Any
    status: np.ndarray
    dtype: Any
    device: torch.device | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.T.shape[:-2])

    @property
    def H(self) -> int:
        return int(self.T.shape[-1])

    @property
    def ok(self) -> np.ndarray:
        """Bool ``[...]``: which matrices have a valid ordered Schur form."""
        return self.status == "ok"


def _validate(W: Any) -> tuple[np.ndarray, Any, torch.device | None]:
    """Float64 host copy of W, its dtype and (for torch) its device; errors name the problem."""
    if isinstance(W, torch.Tensor):
        if W.is_complex() or W.dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"ordered_schur: expected a float32 or float64 tensor, got {W.dtype}; "
                "convert with W.double()"
            )
        dtype, device = W.dtype, W.device
        array = W.detach().to("cpu", torch.float64).numpy()
    elif isinstance(W, np.ndarray):
        # either byte order: the float64 copy below is native
        dtype = W.dtype.newbyteorder("=")
        if dtype not in (np.float32, np.float64):
            raise TypeError(
                f"ordered_schur: expected a float32 or float64 array, got {W.dtype}; "
                "convert with W.astype(np.float64)"
            )
        device = None
        array = np.asarray(W, dtype=np.float64)
    else:
        raise TypeError(
            f"ordered_schur: expected a numpy.ndarray or torch.Tensor, got {type(W).__name__}"
        )

    if array.ndim < 2 or array.shape[-1] != array.shape[-2]:
        raise ValueError(
            f"ordered_schur: expected square matrices of shape [..., H, H], got shape "
            f"{list(array.shape)}"
        )
    return array, dtype, device


def _name(index: tuple[int, ...]) -> str:
    """How messages name a matrix: ``W`` alone, ``W[2]`` or ``W[1, 0]`` in a batch."""
    return "W" if not index else "W[" + ", ".join(str(i) for i in index) + "]"


def _check_finite(flat: np.ndarray, batch_shape: tuple[int, ...]) -> None:
    finite = np.isfinite(flat).all(axis=(1, 2))
    if not finite.all():
        bad = int(np.argmin(finite))
        index = tuple(int(i) for i in np.unravel_index(bad, batch_shape))
        raise ValueError(
            f"ordered_schur: {_name(index)} (batch index {index}) contains NaN or Inf; "
            "the Schur form needs finite entries"
        )


def ordered_schur(W: Any, *, on_error: str = "raise", max_restarts: int = 2) -> SchurResult:
    """Ordered real Schur form ``W = Q T Q^T``, diagonal blocks by nonincreasing modulus.

    Args:
        W: ``[H, H]`` or ``[..., H, H]`` float32/float64 numpy array (either byte order) or
            torch tensor (a CUDA tensor is computed on the host, results returned on its
            device).
        on_error: ``"raise"`` raises :class:`SchurError` for the first matrix that fails;
            ``"status"`` returns every matrix, the failed ones filled with NaN (block sizes
            0) and named in ``status``.
        max_restarts: fresh decompositions tried for a matrix after LAPACK refuses an
            exchange of two blocks that are not near ties (default 2); 0 fails such a matrix
            at its first refusal.

    Returns:
        SchurResult: ``Q``, ``T`` float64 ``[..., H, H]``; ``eigenvalues`` complex
        ``[..., H]`` in diagonal order (a pair adjacent, positive imaginary part first);
        ``block_sizes`` int ``[..., H]``; ``moduli`` float64 ``[..., H]`` (nonincreasing up
        to ties); per matrix ``refused`` (exchanges LAPACK refused), ``accepted`` (refusals
        accepted as near ties), ``restarts`` (fresh decompositions) and ``status``; the
        input ``dtype``; ``timings`` (seconds in the Schur step and in the reordering,
        summed over threads).

    Raises:
        TypeError: W is not a float32/float64 numpy array or torch tensor, or
            ``max_restarts`` is not an int.
        ValueError: W is not a batch of square matrices, or contains NaN/Inf (the batch
            index is named), ``on_error`` is unknown, or ``max_restarts`` lies outside
            ``[0, 64]``.
        SchurError: a matrix could not be put in ordered form (``on_error="raise"``).

    Example:
        >>> import numpy as np
        >>> F = ordered_schur(np.array([[0.5, 0.0], [0.0, -2.0]]))
        >>> F.moduli.tolist()
        [2.0, 0.5]
    """
    if on_error not in _ON_ERROR:
        raise ValueError(f"ordered_schur: on_error must be one of {_ON_ERROR}, got {on_error!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int | np.integer):
        raise TypeError(
            f"ordered_schur: max_restarts must be an int, got {type(max_restarts).__name__}"
        )
    if not 0 <= max_restarts <= 64:
        raise ValueError(f"ordered_schur: max_restarts must be in [0, 64], got {max_restarts}")
    array, dtype, device = _validate(W)

    batch_shape = array.shape[:-2]
    H = array.shape[-1]
    flat = array.reshape((int(np.prod(batch_shape, dtype=np.int64)), H, H))
    _check_finite(flat, batch_shape)

    # an empty batch or H = 0 has nothing to decompose
    if flat.shape[0] == 0 or H == 0:
        out = _empty_outputs(flat.shape[0], H)
    else:
        out = _core.ordered_schur(np.ascontiguousarray(flat), max_restarts=int(max_restarts))

    status = np.asarray(STATUS_NAMES, dtype=object)[out["status"]].astype("<U16")
    # a finite matrix can still have eigenvalues beyond the float64 range (entries near
    # 1.8e308): its form cannot be represented, so it fails rather than pass as "ok"
    finite = np.isfinite(out["T"]).all(axis=(1, 2)) & np.isfinite(out["Q"]).all(axis=(1, 2))
    status[(status == "ok") & ~finite] = "overflow"
    failed = np.flatnonzero(status != "ok")
    if failed.size and on_error == "raise":
        raise _schur_error(int(failed[0]), out, status, batch_shape)

    eigenvalues = out["wr"] + 1j * out["wi"]
    values = {
        "Q": out["Q"],
        "T": out["T"],
        "eigenvalues": eigenvalues,
        "moduli": out["moduli"],
    }
    # never hand out an unsorted form: a failed matrix is NaN throughout, its block sizes 0
    for name in values:
        values[name][failed] = np.nan
    out["block_sizes"][failed] = 0

    def shaped(x: np.ndarray, tail: tuple[int, ...]) -> Any:
        x = x.reshape(batch_shape + tail)
        return torch.from_numpy(x).to(device) if device is not None else x

    return SchurResult(
        Q=shaped(values["Q"], (H, H)),
        T=shaped(values["T"], (H, H)),
        eigenvalues=shaped(values["eigenvalues"], (H,)),
        block_sizes=shaped(out["block_sizes"], (H,)),
        moduli=shaped(values["moduli"], (H,)),
        refused=shaped(out["refused"], ()),
        accepted=shaped(out["accepted"], ()),
        restarts=shaped(out["restarts"], ()),
        status=status.reshape(batch_shape),
        dtype=dtype,
        device=device,
        timings={
            "schur_s": float(out["seconds_schur"]),
            "reorder_s": float(out["seconds_reorder"]),
        },
    )


def _empty_outputs(batch: int, H: int) -> dict[str, Any]:
    ints = np.zeros(batch, dtype=np.int32)
    return {
        "Q": np.zeros((batch, H, H)),
        "T": np.zeros((batch, H, H)),
        "wr": np.zeros((batch, H)),
        "wi": np.zeros((batch, H)),
        "moduli": np.zeros((batch, H)),
        "block_sizes": np.zeros((batch, H), dtype=np.int32),
        "refused": ints,
        "accepted": ints.copy(),
        "restarts": ints.copy(),
        "status": ints.copy(),
        "fail_first": ints - 1,
        "fail_second": ints - 1,
        "seconds_schur": 0.0,
        "seconds_reorder": 0.0,
    }


def _schur_error(
    flat_index: int, out: dict[str, Any], status: np.ndarray, batch_shape: tuple[int, ...]
) -> SchurError:
    index = tuple(int(i) for i in np.unravel_index(flat_index, batch_shape))
    if status[flat_index] == "overflow":
        return SchurError(
            f"ordered_schur: the Schur form of {_name(index)} (batch index {index}) overflows "
            "float64 (eigenvalues beyond 1.8e308); scale the matrix down",
            index,
            None,
        )
    if status[flat_index] == "no_convergence":
        return SchurError(
            f"ordered_schur: the QR iteration did not converge for {_name(index)} "
            f"(batch index {index})",
            index,
            None,
        )
    first, second = int(out["fail_first"][flat_index]), int(out["fail_second"][flat_index])
    return SchurError(
        f"ordered_schur: LAPACK refused to exchange the diagonal blocks starting at rows "
        f"{first} and {second} of {_name(index)} (batch index {index}) "
        f"({int(out['restarts'][flat_index])} fresh decompositions tried); pass "
        "on_error='status' to keep the other matrices",
        index,
        (first, second),
    )
