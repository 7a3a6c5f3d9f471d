// Batched small symmetric solves: one thread per system, math in spd_solve.h (shared with the
// CPU backend, so both give the same bits). The matrix is copied into workspace scratch because
// the Jacobi sweep overwrites it.
#include "accord/kernels.h"
#include "accord/spd_solve.h"
#include "common.cuh"

namespace accord::cuda {
namespace detail {
namespace {

constexpr int kSolveBlock = 64;  // few systems per launch: small blocks spread them over SMs

__global__ void solve_spd_kernel(const double* __restrict__ gram, const double* __restrict__ rhs,
                                 int64_t num_systems, int64_t k, double ridge,
                                 double* __restrict__ x, double* __restrict__ scratch) {
  const int64_t kk = k * k;
  for (int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; s < num_systems;
       s += int64_t(gridDim.x) * blockDim.x) {
    double* a = scratch + s * 2 * kk;
    double* v = a + kk;
    const double* g = gram + s * kk;
    for (int64_t i = 0; i < kk; ++i) a[i] = g[i];
    solve_symmetric_pinv(a, v, rhs + s * k, k, ridge, x + s * k);
  }
}

}  // namespace
}  // namespace detail

int64_t solve_spd_workspace_bytes(int64_t num_systems, int64_t k) {
  return num_systems * 2 * k * k * int64_t(sizeof(double));
}

void solve_spd(const double* gram, const double* rhs, int64_t num_systems, int64_t k, double ridge,
               double* x, void* workspace, void* stream) {
  using namespace detail;
  if (num_systems <= 0 || k <= 0) return;
  const int64_t blocks = (num_systems + kSolveBlock - 1) / kSolveBlock;
  solve_spd_kernel<<<grid_for(blocks), kSolveBlock, 0, as_stream(stream)>>>(
      gram, rhs, num_systems, k, ridge, x, static_cast<double*>(workspace));
  check_launch("solve_spd");
}

}  // namespace accord::cuda
