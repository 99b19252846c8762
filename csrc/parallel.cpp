#include "parallel.hpp"

#include <omp.h>

#include <mutex>

extern "C" {
void scipy_openblas_set_num_threads(int num_threads);
}

namespace schurfast {

int max_threads() { return omp_get_max_threads(); }

void use_single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

}  // namespace schurfast
