"""Ordered real Schur form of 256 random matrices: schurfast against what a user writes today.

Compared, in one run and on the same matrices:
- ours: ``schurfast.ordered_schur`` on the whole batch (OpenMP threads over the batch);
- ours without the reordering (the compiled core with ``reorder=False``), to show what the
  ordering costs;
- ``scipy.linalg.schur`` in a loop: unordered, so it does less work than ours;
- ``scipy.linalg.schur`` plus a Python reordering loop over ``scipy.linalg.lapack.dtrexc``:
  each block is moved to its final place with one call (a selection sort, the cheapest such
  loop), block moduli recomputed with numpy after every move.

scipy runs as installed: its own OpenBLAS may use several threads inside each call.

    python benchmarks/bench_schur.py [--sizes 64 128 256] [--batch 256] [--repeats 3]
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import scipy
import scipy.linalg
from scipy.linalg.lapack import dtrexc

import schurfast
from schurfast import _core

TIE_RTOL = schurfast.schur.SCHUR_TIE_RTOL


def block_moduli(T):
    """Start rows and moduli of the diagonal blocks of a quasi-triangular T."""
    H = len(T)
    sub = np.diagonal(T, offset=-1) != 0
    second = np.concatenate([[False], sub])
    starts = np.flatnonzero(~second)
    moduli = np.abs(np.diagonal(T))[starts]
    pairs = starts[(starts + 1 < H) & np.concatenate([sub, [False]])[starts]]
    if pairs.size:
        b, c = T[pairs, pairs + 1], T[pairs + 1, pairs]
        is_pair = np.isin(starts, pairs)
        moduli[is_pair] = np.hypot(T[pairs, pairs], np.sqrt(np.abs(b)) * np.sqrt(np.abs(c)))
    return starts, moduli


def scipy_ordered_schur(W):
    """scipy.linalg.schur, then every block moved to its place with dtrexc (one call each)."""
    T, Z = scipy.linalg.schur(W)
    T, Z = np.asfortranarray(T), np.asfortranarray(Z)
    pos = 0
    while pos < len(T):
        starts, moduli = block_moduli(T)
        rest = starts >= pos
        starts, moduli = starts[rest], moduli[rest]
        # the first block among the largest (ties keep their order)
        best = np.flatnonzero(moduli >= moduli.max() * (1 - TIE_RTOL))[0]
        if starts[best] != pos:
            T, Z, info = dtrexc(T, Z, starts[best] + 1, pos + 1, overwrite_a=1, overwrite_q=1)
            if info != 0:
                raise RuntimeError(f"dtrexc refused an exchange (info={info})")
        pos += 2 if pos + 1 < len(T) and T[pos + 1, pos] != 0 else 1
    return T, Z


def check(W, Q, T):
    """Reconstruction, orthogonality and nonincreasing block moduli of one result."""
    H = len(W)
    eps = np.finfo(np.float64).eps
    assert np.linalg.norm(Q @ T @ Q.T - W) <= 10 * H * eps * np.linalg.norm(W)
    assert np.linalg.norm(Q.T @ Q - np.eye(H)) <= 10 * H * eps
    _, moduli = block_moduli(T)
    assert np.all(moduli[1:] <= moduli[:-1] * (1 + TIE_RTOL))
    return moduli


def median_seconds(fn, repeats):
    """Median wall seconds over repeats, and the median process CPU seconds (all threads)."""
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
        f"numpy {np.__version__}, scipy {scipy.__version__}, schurfast threads "
        f"{_core.max_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    header = (
        "| H | ours | ours unordered | scipy schur loop | scipy + dtrexc loop "
        "| vs scipy+dtrexc | vs scipy schur | reorder share of ours |"
    )
    print("wall seconds (median), CPU seconds of all threads in brackets")
    print(header)
    print("|" + "---|" * 8)

    rng = np.random.default_rng(0)
    for H in args.sizes:
        W = rng.standard_normal((args.batch, H, H)) / np.sqrt(H)

        # correctness first: both ordered paths give valid forms with the same moduli
        F = schurfast.ordered_schur(W)
        for m in range(0, args.batch, max(1, args.batch // 8)):
            ours = check(W[m], F.Q[m], F.T[m])
            theirs = check(W[m], *scipy_ordered_schur(W[m])[::-1])
            np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-12)

        t_ours = median_seconds(lambda W=W: schurfast.ordered_schur(W), args.repeats + 2)
        t_unordered = median_seconds(
            lambda W=W: _core.ordered_schur(W, reorder=False), args.repeats + 2
        )
        t_scipy = median_seconds(lambda W=W: [scipy.linalg.schur(w) for w in W], args.repeats)
        t_scipy_ordered = median_seconds(
            lambda W=W: [scipy_ordered_schur(w) for w in W], args.repeats
        )

        # the reorder share by the core's own per-phase clocks (summed over threads)
        F = schurfast.ordered_schur(W)
        share = F.timings["reorder_s"] / (F.timings["schur_s"] + F.timings["reorder_s"])
        t = {"ours": t_ours, "unordered": t_unordered, "scipy": t_scipy, "sorted": t_scipy_ordered}
        cells = " | ".join(f"{wall:.3f} [{cpu:.3f}]" for wall, cpu in t.values())
        print(
            f"| {H} | {cells} | {t_scipy_ordered[0] / t_ours[0]:.2f}x "
            f"| {t_scipy[0] / t_ours[0]:.2f}x | {100 * share:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
