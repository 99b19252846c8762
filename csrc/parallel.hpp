// Thread control shared by the batched routines of the core.
#pragma once

namespace schurfast {

// Number of OpenMP threads a parallel region may use.
int max_threads();

// Keeps the wheel's OpenBLAS single-threaded from now on. The core spreads its batches over
// OpenMP threads, and nested BLAS threads would only oversubscribe the cores; the count is not
// restored afterwards because idle OpenBLAS workers spin and take cores from the next region.
// This copy of OpenBLAS serves the core alone (numpy and scipy load their own).
void use_single_threaded_blas();

}  // namespace schurfast
