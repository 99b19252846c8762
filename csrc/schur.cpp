// Ordered real Schur form: dgees (no sorting) for the form, then an insertion sort of the
// diagonal blocks by modulus with LAPACK's block exchange dtrexc.
#include "schur.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "parallel.hpp"

// the wheel exports the Fortran symbols with a scipy_ prefix; the trailing size_t arguments
// are the hidden lengths of the character arguments
extern "C" {
using SelectFn = int (*)(const double*, const double*);
void scipy_dgees_(const char* jobvs, const char* sort, SelectFn select, const int* n, double* A,
                  const int* lda, int* sdim, double* wr, double* wi, double* vs, const int* ldvs,
                  double* work, const int* lwork, int* bwork, int* info, size_t, size_t);
void scipy_dtrexc_(const char* compq, const int* n, double* T, const int* ldt, double* Q,
                   const int* ldq, int* ifst, int* ilst, double* work, int* info, size_t);
}

namespace schurfast {
namespace {

// matrices whose largest entry lies outside [2^-400, 2^400] are scaled by a power of two
// (exact) so that neither LAPACK nor the moduli under- or overflow
constexpr int kScaleExponent = 400;

using Clock = std::chrono::steady_clock;

// x * 2^e; the library call is skipped in the common unscaled case, where it costs a few
// percent of a small matrix's decomposition
inline double scaled(double x, int e) { return e == 0 ? x : std::ldexp(x, e); }

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One thread's buffers, sized once for the batch's H.
struct Workspace {
  int n;
  std::vector<double> W, A, Z, P, wr, wi, work, work_trexc, v;
  std::vector<int> bwork;
  int lwork = 1;

  explicit Workspace(int n_)
      : n(n_),
        W(size_t(n_) * n_),
        A(size_t(n_) * n_),
        Z(size_t(n_) * n_),
        P(size_t(n_) * n_),
        wr(n_),
        wi(n_),
        work_trexc(n_),
        v(n_),
        bwork(n_) {
    // workspace query, once per thread
    double query = 0.0;
    int sdim = 0, info = 0, minus_one = -1;
    scipy_dgees_("V", "N", nullptr, &n, A.data(), &n, &sdim, wr.data(), wi.data(), Z.data(), &n,
                 &query, &minus_one, bwork.data(), &info, 1, 1);
    lwork = std::max(int(query), std::max(1, 3 * n));
    work.resize(lwork);
  }
};

// T is column-major n x n
struct Blocks {
  const double* T;
  int n;

  double at(int i, int j) const { return T[size_t(j) * n + i]; }
  int size(int j) const { return (j + 1 < n && at(j + 1, j) != 0.0) ? 2 : 1; }
  // start of the block that ends at row j - 1
  int start_before(int j) const { return (j >= 2 && at(j - 1, j - 2) != 0.0) ? j - 2 : j - 1; }
  int count_pairs() const {
    int pairs = 0;
    for (int j = 0; j < n; j += size(j)) pairs += size(j) == 2;
    return pairs;
  }
  // |lambda| for a 1x1 block, sqrt(det) for a 2x2 one, without forming a product that
  // could overflow
  double modulus(int j) const {
    if (size(j) == 1) return std::abs(at(j, j));
    double a = at(j, j), b = at(j, j + 1), c = at(j + 1, j), d = at(j + 1, j + 1);
    if (a == d && std::signbit(b) != std::signbit(c)) {
      return std::hypot(a, std::sqrt(std::abs(b)) * std::sqrt(std::abs(c)));
    }
    return std::sqrt(std::abs(a * d - b * c));
  }
};

bool ties(double m1, double m2, double rtol) {
  return std::abs(m1 - m2) <= rtol * std::max(m1, m2);
}

// Insertion sort of the diagonal blocks of T (and the columns of Z) into nonincreasing
// modulus. A block only moves past strictly smaller ones, so ties keep their order. The
// block structure is read again after every exchange; when a 2x2 block splits into two real
// ones the sort starts over. Returns false on an exchange that LAPACK refused between blocks
// that are not even near ties.
bool reorder(Workspace& ws, ReorderOutcome& out) {
  int n = ws.n;
  Blocks blocks{ws.A.data(), n};
  int pos = 0;

  while (pos < n) {
    int s = blocks.size(pos);
    int pairs = blocks.count_pairs();
    int cur = pos;
    bool split = false;

    while (cur > 0) {
      int prev = blocks.start_before(cur);
      double m_cur = blocks.modulus(cur), m_prev = blocks.modulus(prev);
      if (!(m_prev < m_cur) || ties(m_prev, m_cur, kTieRtol)) break;

      int ifst = cur + 1, ilst = prev + 1, info = 0;
      scipy_dtrexc_("V", &n, ws.A.data(), &n, ws.Z.data(), &n, &ifst, &ilst, ws.work_trexc.data(),
                    &info, 1);
      if (info == 1) {
        // too close to exchange stably; fine for numerically inseparable moduli
        out.refused += 1;
        if (ties(m_prev, m_cur, kRefusedTieRtol)) {
          out.accepted += 1;
          break;
        }
        out.fail_first = prev;
        out.fail_second = cur;
        return false;
      }

      cur = ilst - 1;
      if (blocks.count_pairs() != pairs) {
        split = true;
        break;
      }
    }

    pos = split ? 0 : pos + s;
  }

  // the sort's promise, checked once more: an unsorted T is never handed out
  double rtol = out.accepted ? kRefusedTieRtol : kTieRtol;
  for (int j = 0, k = blocks.size(0); k < n; j = k, k += blocks.size(k)) {
    double m_j = blocks.modulus(j), m_k = blocks.modulus(k);
    if (m_j < m_k && !ties(m_j, m_k, rtol)) {
      out.fail_first = j;
      out.fail_second = k;
      return false;
    }
  }
  return true;
}

// P = I - 2 v v^T / (v^T v) for a fixed v that depends on the attempt only; A = P W P
void reflect(Workspace& ws, int attempt) {
  int n = ws.n;
  double vv = 0.0;
  for (int i = 0; i < n; ++i) {
    ws.v[i] = std::cos(0.7548776662466927 * (i + 1) * (attempt + 1)) + 0.5;
    vv += ws.v[i] * ws.v[i];
  }
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < n; ++i) {
      ws.P[size_t(j) * n + i] = (i == j ? 1.0 : 0.0) - 2.0 * ws.v[i] * ws.v[j] / vv;
    }
  }

  // A = P W P with plain loops: a recovery is rare
  std::vector<double> PW(size_t(n) * n, 0.0);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < n; ++k) {
      double w = ws.W[size_t(j) * n + k];
      for (int i = 0; i < n; ++i) PW[size_t(j) * n + i] += ws.P[size_t(k) * n + i] * w;
    }
  std::fill(ws.A.begin(), ws.A.end(), 0.0);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < n; ++k) {
      double p = ws.P[size_t(j) * n + k];
      for (int i = 0; i < n; ++i) ws.A[size_t(j) * n + i] += PW[size_t(k) * n + i] * p;
    }
}

// Z <- P Z
void unreflect(Workspace& ws) {
  int n = ws.n;
  std::vector<double> PZ(size_t(n) * n, 0.0);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < n; ++k) {
      double z = ws.Z[size_t(j) * n + k];
      for (int i = 0; i < n; ++i) PZ[size_t(j) * n + i] += ws.P[size_t(k) * n + i] * z;
    }
  ws.Z.swap(PZ);
}

void one_matrix(Workspace& ws, SchurBatch& b, int64_t m, double& t_schur, double& t_reorder) {
  int n = ws.n;
  size_t nn = size_t(n) * n;
  const double* W = b.W + m * nn;

  // column-major copy (LAPACK's layout) and an exact power-of-two scale
  double max_abs = 0.0;
  for (size_t k = 0; k < nn; ++k) max_abs = std::max(max_abs, std::abs(W[k]));
  int e = 0;
  if (max_abs > 0.0 &&
      (std::ilogb(max_abs) > kScaleExponent || std::ilogb(max_abs) < -kScaleExponent)) {
    e = std::ilogb(max_abs);
  }
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) ws.W[size_t(j) * n + i] = scaled(W[size_t(i) * n + j], -e);

  ReorderOutcome outcome;
  int status = kSchurOk;
  int restarts = 0;
  for (int attempt = 0; attempt <= b.max_restarts; ++attempt) {
    restarts = attempt;
    auto start = Clock::now();
    if (attempt == 0) {
      std::copy(ws.W.begin(), ws.W.end(), ws.A.begin());
    } else {
      reflect(ws, attempt);
    }
    int sdim = 0, info = 0;
    scipy_dgees_("V", "N", nullptr, &n, ws.A.data(), &n, &sdim, ws.wr.data(), ws.wi.data(),
                 ws.Z.data(), &n, ws.work.data(), &ws.lwork, ws.bwork.data(), &info, 1, 1);
    t_schur += seconds_since(start);
    if (info != 0) {
      status = kSchurNoConvergence;
      break;
    }

    start = Clock::now();
    ReorderOutcome tried;
    bool ok = !b.reorder || reorder(ws, tried);
    if (attempt > 0) unreflect(ws);
    t_reorder += seconds_since(start);
    outcome.refused += tried.refused;
    outcome.accepted += tried.accepted;
    outcome.fail_first = tried.fail_first;
    outcome.fail_second = tried.fail_second;
    if (ok) {
      status = kSchurOk;
      break;
    }
    status = kSchurExchangeRefused;
  }

  b.refused[m] = outcome.refused;
  b.accepted[m] = outcome.accepted;
  b.restarts[m] = restarts;
  b.status[m] = status;
  b.fail_first[m] = status == kSchurExchangeRefused ? outcome.fail_first : -1;
  b.fail_second[m] = status == kSchurExchangeRefused ? outcome.fail_second : -1;

  // row-major outputs, scale undone
  double* Q = b.Q + m * nn;
  double* T = b.T + m * nn;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      Q[size_t(i) * n + j] = ws.Z[size_t(j) * n + i];
      T[size_t(i) * n + j] = scaled(ws.A[size_t(j) * n + i], e);
    }

  Blocks blocks{ws.A.data(), n};
  double* wr = b.wr + m * n;
  double* wi = b.wi + m * n;
  double* moduli = b.moduli + m * n;
  int32_t* sizes = b.block_sizes + m * n;
  for (int j = 0; j < n;) {
    int s = blocks.size(j);
    double modulus = std::ldexp(blocks.modulus(j), e);
    if (s == 1) {
      wr[j] = std::ldexp(blocks.at(j, j), e);
      wi[j] = 0.0;
    } else {
      double im =
          std::sqrt(std::abs(blocks.at(j, j + 1))) * std::sqrt(std::abs(blocks.at(j + 1, j)));
      wr[j] = wr[j + 1] = std::ldexp(blocks.at(j, j), e);
      wi[j] = std::ldexp(im, e);
      wi[j + 1] = -wi[j];
    }
    for (int k = j; k < j + s; ++k) {
      sizes[k] = s;
      moduli[k] = modulus;
    }
    j += s;
  }
}

}  // namespace

bool reorder_schur_form(int64_t H, double* T, double* Q, ReorderOutcome& out) {
  int n = int(H);
  if (n == 0) return true;
  Workspace ws(n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      ws.A[size_t(j) * n + i] = T[size_t(i) * n + j];
      ws.Z[size_t(j) * n + i] = Q[size_t(i) * n + j];
    }
  bool ok = reorder(ws, out);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      T[size_t(i) * n + j] = ws.A[size_t(j) * n + i];
      Q[size_t(i) * n + j] = ws.Z[size_t(j) * n + i];
    }
  return ok;
}

void ordered_schur_batch(SchurBatch& b) {
  if (b.batch == 0) return;
  if (b.H == 0) {
    // nothing to decompose: every matrix is trivially in ordered form
    std::fill(b.refused, b.refused + b.batch, 0);
    std::fill(b.accepted, b.accepted + b.batch, 0);
    std::fill(b.restarts, b.restarts + b.batch, 0);
    std::fill(b.status, b.status + b.batch, kSchurOk);
    std::fill(b.fail_first, b.fail_first + b.batch, -1);
    std::fill(b.fail_second, b.fail_second + b.batch, -1);
    return;
  }
  int n = int(b.H);
  use_single_threaded_blas();
  double t_schur = 0.0, t_reorder = 0.0;

#pragma omp parallel reduction(+ : t_schur, t_reorder)
  {
    Workspace ws(n);
#pragma omp for schedule(dynamic, 1)
    for (int64_t m = 0; m < b.batch; ++m) one_matrix(ws, b, m, t_schur, t_reorder);
  }

  b.seconds_schur = t_schur;
  b.seconds_reorder = t_reorder;
}

}  // namespace schurfast
