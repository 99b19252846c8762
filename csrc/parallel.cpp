#include "parallel.hpp"

#include <omp.h>

extern "C" {
void scipy_openblas_set_num_threads(int num_threads);
int scipy_openblas_get_num_threads(void);
}

namespace schurfast {

int max_threads() { return omp_get_max_threads(); }

BlasSingleThreaded::BlasSingleThreaded() : saved_(scipy_openblas_get_num_threads()) {
  scipy_openblas_set_num_threads(1);
}

BlasSingleThreaded::~BlasSingleThreaded() { scipy_openblas_set_num_threads(saved_); }

}  // namespace schurfast
