// The pybind11 module: argument checks by name, docstrings, and calls into the numerics.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "parallel.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "schurfast compiled core: ordered real Schur form and fused CPU rollout.";
  m.attr("__version__") = SCHURFAST_VERSION;
  m.def("max_threads", &schurfast::max_threads,
        "Number of OpenMP threads the batched routines use.");
}
