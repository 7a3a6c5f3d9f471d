#pragma once
// The fused segment kernels. Framework-agnostic: raw pointers, a dtype code and a Layout whose
// arrays live on the kernel's device. Each op exists once per backend with the same contract;
// the per-element and per-segment math comes from the shared headers (pair_math.h,
// spd_solve.h, layout.h, dtype.h).
//
// Shapes (L = layout.num_segments, n = offsets[L], k = number of vectors):
//   segment_dots    a[n], b[n]                    -> dots[L][3] = (a.b, a.a, b.b), float64
//                                                    (Inf where a float64 square norm overflows)
//   adasum_combine  a[n], b[n], dots or null      -> out[n] (may alias a or b); with null dots it
//                                                    uses scaled dots: finite for finite inputs
//   gram            v[k][n], rhs[n] or null       -> gram[L][k][k], rhs_dots[L][k] = v_i.rhs
//   solve_spd       gram[L][k][k], rhs[L][k]      -> x[L][k] (pseudo-inverse of gram + ridge I)
//   weighted_sum    v[k][n], w[L][k] (float64)    -> out[n] = sum_i w[l][i] v_i
//   axpby           x[n], y[n], alpha[L], beta[L] -> out[n] = alpha[l] x + beta[l] y (may alias x)
#include <cstdint>

#include "accord/dtype.h"
#include "accord/layout.h"
#include "accord/scaled_dots.h"
#include "accord/spd_solve.h"

namespace accord {

namespace cpu {
constexpr int64_t kTileSize = 4096;       // elements per reduction tile (dots, elementwise ops)
constexpr int64_t kGramTileSize = 32768;  // gram keeps k(k+1)/2 partials per tile: larger tiles

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots);
// The same dots in scaled form (scaled_dots.h): what adasum_combine uses when not given dots.
void segment_dots_scaled(DType dtype, const void* a, const void* b, const Layout& layout,
                         ScaledDots* dots);
void adasum_combine(DType dtype, const void* a, const void* b, void* out, const Layout& layout,
                    const double* dots, double wa, double wb);
void gram(DType dtype, const void* vectors, int64_t k, const void* rhs, const Layout& layout,
          double* gram, double* rhs_dots);
void solve_spd(const double* gram, const double* rhs, int64_t num_systems, int64_t k, double ridge,
               double* x);
// The CUDA backend's sweep order (spd_solve.h) run on the CPU: what tests compare CUDA against.
void solve_spd_round_robin(const double* gram, const double* rhs, int64_t num_systems, int64_t k,
                           double ridge, double* x);
void weighted_sum(DType dtype, const void* vectors, int64_t k, const double* weights,
                  const Layout& layout, void* out);
void axpby(DType dtype, const void* x, const void* y, void* out, const Layout& layout,
           const double* alpha, const double* beta);
int max_threads();
// The SIMD level the CPU kernels run ("avx2" or "portable"; both give the same bits), the
// best one this CPU supports, and a switch for tests and benchmarks: false if `name` is unknown or
// above what the CPU supports.
const char* current_isa();
const char* best_isa();
bool set_isa(const char* name);
}  // namespace cpu

#if defined(ACCORD_WITH_CUDA)
// Same contracts; every pointer (layout arrays included) is device memory, work is enqueued on
// `stream` (a cudaStream_t) and nothing synchronises the host. `workspace` is caller-allocated
// device scratch of at least *_workspace_bytes(...) bytes, so the framework's caching allocator
// owns all memory.
namespace cuda {
constexpr int64_t kTileSize = 8192;
constexpr int64_t kGramTileSize = 8192;

int64_t segment_dots_workspace_bytes(const Layout& layout);
int64_t adasum_combine_workspace_bytes(const Layout& layout);  // when dots is null
int64_t gram_workspace_bytes(const Layout& layout, int64_t k, bool with_rhs);
int64_t solve_spd_workspace_bytes(int64_t num_systems, int64_t k);

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots,
                  void* workspace, void* stream);
void adasum_combine(DType dtype, const void* a, const void* b, void* out, const Layout& layout,
                    const double* dots, double wa, double wb, void* workspace, void* stream);
void gram(DType dtype, const void* vectors, int64_t k, const void* rhs, const Layout& layout,
          double* gram, double* rhs_dots, void* workspace, void* stream);
void solve_spd(const double* gram, const double* rhs, int64_t num_systems, int64_t k, double ridge,
               double* x, void* workspace, void* stream);
void weighted_sum(DType dtype, const void* vectors, int64_t k, const double* weights,
                  const Layout& layout, void* out, void* stream);
void axpby(DType dtype, const void* x, const void* y, void* out, const Layout& layout,
           const double* alpha, const double* beta, void* stream);
int device_count();  // 0 when no driver or no GPU, never throws

// Makes cuda:index current for one kernel call and restores the previous device (kernels
// launch on the current device; a tensor on cuda:1 must not be processed with cuda:0 current).
// The caller names the device (Python knows it from the tensor), so a launch costs one
// cudaGetDevice and no pointer-attribute query.
class OnDevice {
 public:
  explicit OnDevice(int index);
  ~OnDevice();
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

 private:
  int previous_ = -1;
};
}  // namespace cuda
#endif

}  // namespace accord
