// Fused CPU rollout of one tanh RNN under V recurrent matrices at once.
//
//   h_t = tanh(W_hh[v] h_{t-1} + u_t + b),   y_t = W_hy h_t + c
//
// The input projection W_xh x_t is computed once for all variants when W_xh and x are shared,
// and inside the step for per-variant W_xh or x, with the same arithmetic. Each work item is one
// variant and one tile of batch rows; its state stays in cache for the whole sequence, and the tanh
// and the readout are applied in the same pass over the tile at every step.
#pragma once

#include <cstdint>

namespace schurfast {

// Pointers into C-contiguous arrays. A `*_per_variant` flag says that the array has a leading
// variant axis of length V; otherwise the one array is shared by every variant.
template <typename T>
struct RolloutProblem {
  int64_t V = 0, B = 0, L = 0, H = 0, I = 0, O = 0;
  int threads = 0;          // 0: max_threads()
  const T* W_hh = nullptr;  // [V, H, H]
  const T* x = nullptr;     // [B, L, I] or [V, B, L, I]
  bool x_per_variant = false;
  const T* W_xh = nullptr;  // [H, I] or [V, H, I]
  bool W_xh_per_variant = false;
  const T* b = nullptr;  // [H] or [V, H], may be null
  bool b_per_variant = false;
  const T* h0 = nullptr;  // [B, H] or [V, B, H], may be null (zeros)
  bool h0_per_variant = false;
  const T* W_hy = nullptr;  // [O, H] or [V, O, H]
  bool W_hy_per_variant = false;
  const T* c = nullptr;  // [O] or [V, O], may be null
  bool c_per_variant = false;
  T* y = nullptr;       // [V, B, L, O], every element written
  T* hidden = nullptr;  // [V, B, L, H] or null
};

// The gradient of a rollout with per-variant weights and inputs (V independently trained
// networks), for training: from grad_y = dL/dy it writes grad_pre = dL/d(pre-activation) for
// every row and step. The weight gradients follow from grad_pre, grad_y, x and hidden as
// products over all rows and steps, which the caller forms: dW_hh[v] sums grad_pre[t]
// hidden[t-1]^T, dW_xh[v] sums grad_pre[t] x[t]^T, dW_hy[v] sums grad_y[t] hidden[t]^T.
template <typename T>
struct RolloutGradProblem {
  int64_t V = 0, B = 0, L = 0, H = 0, O = 0;
  int threads = 0;            // 0: max_threads()
  const T* W_hh = nullptr;    // [V, H, H]
  const T* W_hy = nullptr;    // [V, O, H]
  const T* hidden = nullptr;  // [V, B, L, H], from the forward rollout
  const T* grad_y = nullptr;  // [V, B, L, O]
  T* grad_pre = nullptr;      // [V, B, L, H], every element written
};

void rollout_backward_cpu(const RolloutGradProblem<float>& p);
void rollout_backward_cpu(const RolloutGradProblem<double>& p);

// Runs the rollout on OpenMP threads over (variant, batch tile) work items. Every output row
// is computed with the same fixed operation order whatever the tiling, so results do not
// depend on how variants and rows are split across calls.
void rollout_cpu(const RolloutProblem<float>& p);
void rollout_cpu(const RolloutProblem<double>& p);

// The float32 tanh the fused kernel applies (vectorized where the CPU allows), exposed for
// its accuracy test. Maximum error: see rollout_cpu.cpp.
void tanh_f32(const float* x, float* out, int64_t n);

// Whether the AVX2/FMA micro-kernels are in use on this CPU.
bool rollout_cpu_vectorized();

}  // namespace schurfast
