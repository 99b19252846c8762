// The pybind11 module: argument checks by name, docstrings, and calls into the numerics.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "parallel.hpp"
#include "schur.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "schurfast compiled core: ordered real Schur form and fused CPU rollout.";
  m.attr("__version__") = SCHURFAST_VERSION;
  m.def("max_threads", &schurfast::max_threads,
        "Number of OpenMP threads the batched routines use.");

  // ordered real Schur form
  m.attr("SCHUR_TIE_RTOL") = schurfast::kTieRtol;
  m.attr("SCHUR_REFUSED_TIE_RTOL") = schurfast::kRefusedTieRtol;
  m.def(
      "ordered_schur",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> W, bool reorder) {
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
      py::arg("W"), py::arg("reorder") = true,
      R"doc(Ordered real Schur form of a batch of finite float64 matrices.

W = Q T Q^T per matrix, the diagonal blocks of T in nonincreasing modulus. W [batch, H, H]
must be finite (not checked here). With reorder=False the blocks stay in LAPACK's order
(for timing). Returns a dict of arrays: Q, T [batch, H, H]; wr, wi, moduli, block_sizes
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
