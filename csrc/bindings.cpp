// The pybind11 module: argument checks by name, docstrings, and calls into the numerics.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.hpp"
#include "rollout_cpu.hpp"
#include "schur.hpp"

namespace py = pybind11;

namespace {

// fused CPU rollout: shapes checked by name, the GIL released around the kernel

template <typename T>
using Array = py::array_t<T, py::array::c_style>;

std::string shape_of(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

// Checks `a` against one of two shapes (without and with a leading variant axis) and says
// whether it has the variant axis.
template <typename T>
bool check_shape(const char* name, const Array<T>& a, std::initializer_list<int64_t> shared,
                 int64_t V) {
  std::vector<int64_t> with_v{V};
  with_v.insert(with_v.end(), shared.begin(), shared.end());
  auto matches = [&](const std::vector<int64_t>& want) {
    if (a.ndim() != static_cast<py::ssize_t>(want.size())) return false;
    for (size_t i = 0; i < want.size(); ++i) {
      if (a.shape(i) != want[i]) return false;
    }
    return true;
  };
  const std::vector<int64_t> plain(shared);
  if (matches(plain)) return false;
  if (matches(with_v)) return true;
  auto fmt = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  };
  throw std::invalid_argument(std::string(name) + ": expected shape " + fmt(plain) + " or " +
                              fmt(with_v) + ", got " + shape_of(a));
}

template <typename T>
void rollout_cpu_bound(const Array<T>& W_hh, const Array<T>& W_xh, const Array<T>& W_hy,
                       const Array<T>& x, Array<T> y, std::optional<Array<T>> hidden,
                       std::optional<Array<T>> b, std::optional<Array<T>> h0,
                       std::optional<Array<T>> c, int threads) {
  if (W_hh.ndim() != 3 || W_hh.shape(1) != W_hh.shape(2)) {
    throw std::invalid_argument("W_hh: expected shape [V, H, H], got " + shape_of(W_hh));
  }
  if (y.ndim() != 4)
    throw std::invalid_argument("y: expected shape [V, B, L, O], got " + shape_of(y));
  schurfast::RolloutProblem<T> p;
  p.V = W_hh.shape(0);
  p.H = W_hh.shape(1);
  p.B = y.shape(1);
  p.L = y.shape(2);
  p.O = y.shape(3);
  check_shape<T>("y", y, {p.B, p.L, p.O}, p.V);
  p.W_hh = W_hh.data();
  p.threads = std::max(0, threads);
  p.x_per_variant = x.ndim() == 4;
  const py::ssize_t lead = p.x_per_variant ? 1 : 0;
  if ((x.ndim() != 3 && x.ndim() != 4) || (p.x_per_variant && x.shape(0) != p.V) ||
      x.shape(lead) != p.B || x.shape(lead + 1) != p.L) {
    throw std::invalid_argument("x: expected shape [" + std::to_string(p.B) + ", " +
                                std::to_string(p.L) + ", I] or [" + std::to_string(p.V) + ", " +
                                std::to_string(p.B) + ", " + std::to_string(p.L) + ", I], got " +
                                shape_of(x));
  }
  p.I = x.shape(lead + 2);
  p.x = x.data();
  p.W_xh_per_variant = check_shape<T>("W_xh", W_xh, {p.H, p.I}, p.V);
  p.W_xh = W_xh.data();
  p.W_hy_per_variant = check_shape<T>("W_hy", W_hy, {p.O, p.H}, p.V);
  p.W_hy = W_hy.data();
  p.y = y.mutable_data();
  if (hidden) {
    if (!check_shape<T>("hidden", *hidden, {p.B, p.L, p.H}, p.V)) {
      throw std::invalid_argument("hidden: expected shape [V, B, L, H], got " + shape_of(*hidden));
    }
    p.hidden = hidden->mutable_data();
  }
  if (b) {
    p.b_per_variant = check_shape<T>("b", *b, {p.H}, p.V);
    p.b = b->data();
  }
  if (h0) {
    p.h0_per_variant = check_shape<T>("h0", *h0, {p.B, p.H}, p.V);
    p.h0 = h0->data();
  }
  if (c) {
    p.c_per_variant = check_shape<T>("c", *c, {p.O}, p.V);
    p.c = c->data();
  }

  py::gil_scoped_release release;
  schurfast::rollout_cpu(p);
}

template <typename T>
void def_rollout(py::module_& m) {
  m.def("rollout_cpu", &rollout_cpu_bound<T>, py::arg("W_hh").noconvert(),
        py::arg("W_xh").noconvert(), py::arg("W_hy").noconvert(), py::arg("x").noconvert(),
        py::arg("y").noconvert(), py::arg("hidden").noconvert() = py::none(),
        py::arg("b").noconvert() = py::none(), py::arg("h0").noconvert() = py::none(),
        py::arg("c").noconvert() = py::none(), py::arg("threads") = 0,
        "Fused tanh RNN rollout over V recurrent matrices into the preallocated y [V, B, L, O]\n"
        "(and hidden [V, B, L, H]) from x [B, L, I] or [V, B, L, I]; W_xh [H, I] or\n"
        "[V, H, I]. All arrays C-contiguous of one dtype (float32 or float64). threads=0\n"
        "uses max_threads().");
}

// The gradient of a per-variant rollout: W_hh [V, H, H], W_hy [V, O, H], hidden [V, B, L, H],
// grad_y [V, B, L, O], grad_pre [V, B, L, H].
template <typename T>
void rollout_backward_bound(const Array<T>& W_hh, const Array<T>& W_hy, const Array<T>& hidden,
                            const Array<T>& grad_y, Array<T> grad_pre, int threads) {
  if (hidden.ndim() != 4) {
    throw std::invalid_argument("hidden: expected shape [V, B, L, H], got " + shape_of(hidden));
  }
  schurfast::RolloutGradProblem<T> p;
  p.V = hidden.shape(0);
  p.B = hidden.shape(1);
  p.L = hidden.shape(2);
  p.H = hidden.shape(3);
  p.O = W_hy.ndim() == 3 ? W_hy.shape(1) : -1;
  p.threads = std::max(0, threads);
  auto expect = [](const char* name, const Array<T>& a, std::vector<int64_t> want) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
    for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
    if (ok) return;
    std::string s = "[";
    for (size_t i = 0; i < want.size(); ++i) s += (i ? ", " : "") + std::to_string(want[i]);
    throw std::invalid_argument(std::string(name) + ": expected shape " + s + "], got " +
                                shape_of(a));
  };
  expect("W_hh", W_hh, {p.V, p.H, p.H});
  if (p.O < 0) throw std::invalid_argument("W_hy: expected shape [V, O, H], got " + shape_of(W_hy));
  expect("W_hy", W_hy, {p.V, p.O, p.H});
  expect("grad_y", grad_y, {p.V, p.B, p.L, p.O});
  expect("grad_pre", grad_pre, {p.V, p.B, p.L, p.H});
  p.W_hh = W_hh.data();
  p.W_hy = W_hy.data();
  p.hidden = hidden.data();
  p.grad_y = grad_y.data();
  p.grad_pre = grad_pre.mutable_data();

  py::gil_scoped_release release;
  schurfast::rollout_backward_cpu(p);
}

template <typename T>
void def_rollout_backward(py::module_& m) {
  m.def("rollout_backward_cpu", &rollout_backward_bound<T>, py::arg("W_hh").noconvert(),
        py::arg("W_hy").noconvert(), py::arg("hidden").noconvert(), py::arg("grad_y").noconvert(),
        py::arg("grad_pre").noconvert(), py::arg("threads") = 0,
        "Backpropagation through a rollout with per-variant weights: the gradient with respect\n"
        "to every pre-activation into the preallocated grad_pre [V, B, L, H], from W_hh\n"
        "[V, H, H], W_hy [V, O, H], the hidden states [V, B, L, H] of the forward rollout and\n"
        "grad_y [V, B, L, O]. threads=0 uses max_threads().");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "schurfast compiled core: ordered real Schur form and fused CPU rollout.";
  m.attr("__version__") = SCHURFAST_VERSION;
  m.def("max_threads", &schurfast::max_threads,
        "Number of OpenMP threads the batched routines use.");

  // fused CPU rollout
  def_rollout<float>(m);
  def_rollout<double>(m);
  def_rollout_backward<float>(m);
  def_rollout_backward<double>(m);
  m.def(
      "tanh_f32",
      [](const Array<float>& x) {
        Array<float> out(x.request().shape);
        {
          py::gil_scoped_release release;
          schurfast::tanh_f32(x.data(), out.mutable_data(), static_cast<int64_t>(x.size()));
        }
        return out;
      },
      py::arg("x").noconvert(), "The float32 tanh of the fused CPU rollout, elementwise.");
  m.def("rollout_cpu_vectorized", &schurfast::rollout_cpu_vectorized,
        "Whether the fused CPU rollout uses its AVX2/FMA micro-kernels on this CPU.");

  // ordered real Schur form
  m.attr("SCHUR_TIE_RTOL") = schurfast::kTieRtol;
  m.attr("SCHUR_REFUSED_TIE_RTOL") = schurfast::kRefusedTieRtol;
  m.def(
      "ordered_schur",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> W, bool reorder,
         int max_restarts) {
        if (max_restarts < 0) {
          throw std::invalid_argument("ordered_schur: max_restarts must be >= 0, got " +
                                      std::to_string(max_restarts));
        }
        if (W.ndim() != 3 || W.shape(1) != W.shape(2)) {
          std::string shape;
          for (py::ssize_t d = 0; d < W.ndim(); ++d) {
            shape += (d ? ", " : "") + std::to_string(W.shape(d));
          }
          throw std::invalid_argument("ordered_schur: W must have shape [batch, H, H], got [" +
                                      shape + "]");
        }
        const py::ssize_t batch = W.shape(0), H = W.shape(1);
        py::array_t<double> Q({batch, H, H}), T({batch, H, H});
        py::array_t<double> wr({batch, H}), wi({batch, H}), moduli({batch, H});
        py::array_t<int32_t> block_sizes({batch, H});
        py::array_t<int32_t> refused(batch), accepted(batch), restarts(batch), status(batch);
        py::array_t<int32_t> fail_first(batch), fail_second(batch);

        schurfast::SchurBatch b;
        b.batch = batch;
        b.H = H;
        b.W = W.data();
        b.Q = Q.mutable_data();
        b.T = T.mutable_data();
        b.wr = wr.mutable_data();
        b.wi = wi.mutable_data();
        b.block_sizes = block_sizes.mutable_data();
        b.moduli = moduli.mutable_data();
        b.refused = refused.mutable_data();
        b.accepted = accepted.mutable_data();
        b.restarts = restarts.mutable_data();
        b.status = status.mutable_data();
        b.fail_first = fail_first.mutable_data();
        b.fail_second = fail_second.mutable_data();
        b.reorder = reorder;
        b.max_restarts = max_restarts;
        {
          py::gil_scoped_release release;
          schurfast::ordered_schur_batch(b);
        }

        py::dict out;
        out["Q"] = Q;
        out["T"] = T;
        out["wr"] = wr;
        out["wi"] = wi;
        out["moduli"] = moduli;
        out["block_sizes"] = block_sizes;
        out["refused"] = refused;
        out["accepted"] = accepted;
        out["restarts"] = restarts;
        out["status"] = status;
        out["fail_first"] = fail_first;
        out["fail_second"] = fail_second;
        out["seconds_schur"] = b.seconds_schur;
        out["seconds_reorder"] = b.seconds_reorder;
        return out;
      },
      py::arg("W"), py::arg("reorder") = true, py::arg("max_restarts") = 2,
      R"doc(Ordered real Schur form of a batch of finite float64 matrices.

W = Q T Q^T per matrix, the diagonal blocks of T in nonincreasing modulus. W [batch, H, H]
must be finite (not checked here). With reorder=False the blocks stay in LAPACK's order
(for timing). max_restarts fresh decompositions are tried after a refused exchange. Returns a dict of arrays: Q, T [batch, H, H]; wr, wi, moduli, block_sizes
[batch, H]; refused, accepted, restarts, status, fail_first, fail_second [batch]; and the
seconds spent in the Schur step and in the reordering, summed over threads.)doc");
  m.def(
      "reorder_schur_form",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> T,
         py::array_t<double, py::array::c_style | py::array::forcecast> Q) {
        if (T.ndim() != 2 || T.shape(0) != T.shape(1) || Q.ndim() != 2 ||
            Q.shape(0) != T.shape(0) || Q.shape(1) != T.shape(0)) {
          throw std::invalid_argument("reorder_schur_form: T and Q must be [H, H] alike");
        }
        py::array_t<double> T_out({T.shape(0), T.shape(1)}), Q_out({Q.shape(0), Q.shape(1)});
        std::copy(T.data(), T.data() + T.size(), T_out.mutable_data());
        std::copy(Q.data(), Q.data() + Q.size(), Q_out.mutable_data());
        schurfast::ReorderOutcome outcome;
        bool ok = false;
        {
          py::gil_scoped_release release;
          schurfast::use_single_threaded_blas();
          ok = schurfast::reorder_schur_form(T.shape(0), T_out.mutable_data(), Q_out.mutable_data(),
                                             outcome);
        }
        py::dict out;
        out["T"] = T_out;
        out["Q"] = Q_out;
        out["ok"] = ok;
        out["refused"] = outcome.refused;
        out["accepted"] = outcome.accepted;
        out["fail_first"] = outcome.fail_first;
        out["fail_second"] = outcome.fail_second;
        return out;
      },
      py::arg("T"), py::arg("Q"),
      R"doc(Reorders one real Schur form T [H, H] (with Q [H, H]) by nonincreasing modulus.

The reordering step of ordered_schur alone, for tests of refused exchanges. Returns a dict:
T, Q, ok, refused, accepted, fail_first, fail_second.)doc");
}
