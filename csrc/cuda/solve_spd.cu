// Batched small symmetric solves: one warp per system, running spd_solve.h's
// solve_symmetric_pinv (the CPU backend runs the same template on one thread). The lanes split
// every independent element loop (the k rows of a rotation's column and row updates, of the
// initialisation and of the solution); the scalar steps (sweep test, rotation angle,
// projections) run in every lane alike, so every value comes from the same operations in the
// same order as on the CPU, and this file is compiled without FMA contraction
// (cmake/AccordCUDA.cmake): CUDA and CPU give the same bits.
//
// The matrix and the eigenvectors (2 k^2 doubles) live in shared memory when they fit in the
// default 48 KiB (k <= 55), otherwise in the caller's workspace (L1/L2-resident), as the Jacobi
// sweep overwrites them.
#include "accord/kernels.h"
#include "accord/spd_solve.h"
#include "common.cuh"

namespace accord::cuda {
namespace detail {
namespace {

constexpr int kWarp = 32;
constexpr int64_t kSharedSolveBytes = 48 * 1024;

struct WarpLoops {
  template <typename F>
  __device__ __forceinline__ void for_each(int64_t k, F&& f) const {
    __syncwarp();  // every lane's reads of what this loop overwrites are done
    for (int64_t i = threadIdx.x; i < k; i += kWarp) f(i);
    __syncwarp();  // and its writes are visible to every lane
  }
  __device__ __forceinline__ bool all(bool b) const { return __all_sync(0xFFFFFFFFu, b); }
};

int64_t solve_shared_bytes(int64_t k) {
  const int64_t bytes = 2 * k * k * int64_t(sizeof(double));
  return bytes <= kSharedSolveBytes ? bytes : 0;
}

// One warp (block) per system, grid-stride over the systems.
__global__ void __launch_bounds__(kWarp)
    solve_spd_kernel(const double* __restrict__ gram, const double* __restrict__ rhs,
                     int64_t num_systems, int64_t k, double ridge, double* __restrict__ x,
                     double* __restrict__ scratch, bool in_shared) {
  extern __shared__ double shared[];
  const int64_t kk = k * k;
  for (int64_t s = blockIdx.x; s < num_systems; s += gridDim.x) {
    double* a = in_shared ? shared : scratch + s * 2 * kk;
    double* v = a + kk;
    const double* g = gram + s * kk;
    __syncwarp();  // the previous system's last reads of a are done
    for (int64_t i = threadIdx.x; i < kk; i += kWarp) a[i] = g[i];
    __syncwarp();
    solve_symmetric_pinv(a, v, rhs + s * k, k, ridge, x + s * k, WarpLoops{});
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
  const int64_t smem = solve_shared_bytes(k);
  solve_spd_kernel<<<grid_for(num_systems), kWarp, size_t(smem), as_stream(stream)>>>(
      gram, rhs, num_systems, k, ridge, x, static_cast<double*>(workspace), smem > 0);
  check_launch("solve_spd");
}

}  // namespace accord::cuda
