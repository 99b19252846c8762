// Thread control shared by the batched Schur core and the fused rollout.
#pragma once

namespace schurfast {

// Number of OpenMP threads a parallel region may use; 1 when built without OpenMP.
int max_threads();

// While alive, keeps OpenBLAS single-threaded: the batch is already spread over OpenMP
// threads, and nested BLAS threads would only oversubscribe the cores.
class BlasSingleThreaded {
 public:
  BlasSingleThreaded();
  ~BlasSingleThreaded();
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_;
};

}  // namespace schurfast
