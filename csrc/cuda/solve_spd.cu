// Batched small symmetric solves: one warp per system, running spd_solve.h's
// solve_symmetric_pinv_round_robin. A round's ceil(k/2) rotation angles are computed by as many
// lanes at once and its column and row updates are split over the lanes, so a sweep costs k - 1
// dependent chains of divisions and square roots instead of k (k - 1) / 2 (the cyclic order's).
// The scalar steps (sweep test, projections) run in every lane alike and this file is compiled
// without FMA contraction (cmake/AccordCUDA.cmake): the result has the same bits as the CPU's
// run of the same order (accord._C.solve_spd_round_robin), which tests compare against.
//
// The matrix, the eigenvectors and the round's rotations (2 k^2 + 4 ceil(k/2) doubles) live in
// shared memory when they fit in the default 48 KiB (k <= 54), otherwise in the caller's
// workspace (L1/L2-resident), as the sweeps overwrite them.
#include "accord/kernels.h"
#include "accord/spd_solve.h"
#include "common.cuh"

namespace accord::cuda {
namespace detail {
namespace {

constexpr int kWarp = 32;
constexpr int64_t kSharedSolveBytes = 48 * 1024;

struct WarpLoops {
  static constexpr int kLanes = kWarp;
  template <typename F>
  __device__ __forceinline__ void for_each(int64_t k, F&& f) const {
    __syncwarp();  // every lane's reads of what this loop overwrites are done
    for (int64_t i = threadIdx.x; i < k; i += kWarp) f(i);
    __syncwarp();  // and its writes are visible to every lane
  }
  __device__ __forceinline__ bool all(bool b) const { return __all_sync(0xFFFFFFFFu, b); }
};

// doubles of scratch per system: a, v, and the round's (c, s, p, q) per pair
ACCORD_HD int64_t solve_scratch_doubles(int64_t k) { return 2 * k * k + 4 * ((k + 1) / 2); }

int64_t solve_shared_bytes(int64_t k) {
  const int64_t bytes = solve_scratch_doubles(k) * int64_t(sizeof(double));
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
    double* a = in_shared ? shared : scratch + s * solve_scratch_doubles(k);
    double* v = a + kk;
    double* cs = v + kk;
    const double* g = gram + s * kk;
    __syncwarp();  // the previous system's last reads of a are done
    for (int64_t i = threadIdx.x; i < kk; i += kWarp) a[i] = g[i];
    __syncwarp();
    solve_symmetric_pinv_round_robin(a, v, rhs + s * k, k, ridge, x + s * k, cs, WarpLoops{});
  }
}

}  // namespace
}  // namespace detail

int64_t solve_spd_workspace_bytes(int64_t num_systems, int64_t k) {
  return num_systems * detail::solve_scratch_doubles(k) * int64_t(sizeof(double));
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
