// Batched ordered real Schur form on LAPACK: W = Q T Q^T with the diagonal blocks of T in
// nonincreasing modulus. Plain C++, no Python headers.
#pragma once

#include <cstdint>

namespace schurfast {

// Blocks whose moduli m1, m2 satisfy |m1 - m2| <= kTieRtol * max(m1, m2) are ties: they keep
// the order the Schur step produced and are never exchanged. Every modulus of an orthogonal
// matrix is 1 up to a few hundred ulps, so such a matrix keeps T exactly as computed.
inline constexpr double kTieRtol = 1e-12;

// Moduli of two blocks LAPACK refuses to exchange (even after recovery) that agree within
// this relative tolerance are numerically inseparable (a nearly defective cluster whose
// eigenvalues are only known to about sqrt(eps)); the refusal is accepted and counted.
inline constexpr double kRefusedTieRtol = 1e-6;

// Per-matrix outcome.
enum SchurStatus : int32_t {
  kSchurOk = 0,
  // the QR iteration of the Schur step did not converge
  kSchurNoConvergence = 1,
  // an exchange between two blocks of different modulus was refused and not recovered
  kSchurExchangeRefused = 2,
};

// Outputs of one batch; every pointer is owned by the caller and row-major.
struct SchurBatch {
  int64_t batch = 0;
  int64_t H = 0;
  // [batch, H, H] input, finite (checked by the caller)
  const double* W = nullptr;
  // [batch, H, H]
  double* Q = nullptr;
  double* T = nullptr;
  // [batch, H]: real and imaginary parts of the eigenvalues in diagonal order
  double* wr = nullptr;
  double* wi = nullptr;
  // [batch, H]: 1 or 2, the size of the block each index belongs to
  int32_t* block_sizes = nullptr;
  // [batch, H]: the modulus of the block each index belongs to
  double* moduli = nullptr;
  // [batch]: exchanges LAPACK refused (all attempts), those accepted as near ties, fresh
  // decompositions after an orthogonal similarity, the status, and for a failure the start
  // rows of the two blocks that could not be exchanged (-1 otherwise)
  int32_t* refused = nullptr;
  int32_t* accepted = nullptr;
  int32_t* restarts = nullptr;
  int32_t* status = nullptr;
  int32_t* fail_first = nullptr;
  int32_t* fail_second = nullptr;
  // skip the reordering (benchmarks measure its share of the time with this)
  bool reorder = true;
  // fresh decompositions, each after a fixed orthogonal similarity, tried after an exchange
  // is refused; 0 reports the first refusal that is not a near tie
  int max_restarts = 2;
  // summed over threads: seconds spent in the Schur step and in the reordering
  double seconds_schur = 0.0;
  double seconds_reorder = 0.0;
};

// Outcome of reordering one Schur form.
struct ReorderOutcome {
  int refused = 0;
  int accepted = 0;
  // start rows of the two blocks of an exchange that failed; -1 when none did
  int fail_first = -1;
  int fail_second = -1;
};

// Reorders one real Schur form in place, T and Q row-major [H, H], keeping Q T Q^T. This is
// the reordering step of ordered_schur_batch, alone, so that forms on which LAPACK refuses
// an exchange can be handed to it directly; without W there is no fresh decomposition to
// fall back on, so it returns false on any refusal that is not a near tie.
bool reorder_schur_form(int64_t H, double* T, double* Q, ReorderOutcome& out);

// Computes the ordered real Schur form of every matrix of the batch, OpenMP threads over
// the batch, OpenBLAS single-threaded inside.
void ordered_schur_batch(SchurBatch& b);

}  // namespace schurfast
