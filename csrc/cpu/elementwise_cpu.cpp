// Weighted sums of k vectors and axpby, with per-segment coefficients, in opmath precision.
#include <algorithm>

#include "accord/kernels.h"
#include "parallel.h"

#if defined(ACCORD_WITH_OPENMP)
#include <omp.h>
#endif

namespace accord::cpu {

int max_threads() {
#if defined(ACCORD_WITH_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void weighted_sum(DType dtype, const void* vectors, int64_t k, const double* weights,
                  const Layout& layout, void* out) {
  const int64_t n = layout_elements(layout);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using M = typename Elem<T>::opmath;
    const T* v = static_cast<const T*>(vectors);
    T* po = static_cast<T*>(out);
    for_each_tile(layout, n * k, [&](TileRange r, int64_t) {
      M acc[kTileSize];
      const int64_t len = r.end - r.begin;
      const double* w = weights + r.segment * k;
      std::fill(acc, acc + len, M(0));
      // Vector order 0..k-1 for every element, as on CUDA: the sum's rounding is fixed.
      for (int64_t i = 0; i < k; ++i) {
        const M wi = M(w[i]);
        const T* vi = v + i * n + r.begin;
#pragma omp simd
        for (int64_t e = 0; e < len; ++e) acc[e] += wi * Elem<T>::load(vi[e]);
      }
#pragma omp simd
      for (int64_t e = 0; e < len; ++e) po[r.begin + e] = Elem<T>::store(acc[e]);
    });
  });
}

void axpby(DType dtype, const void* x, const void* y, void* out, const Layout& layout,
           const double* alpha, const double* beta) {
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using M = typename Elem<T>::opmath;
    const T* px = static_cast<const T*>(x);
    const T* py = static_cast<const T*>(y);
    T* po = static_cast<T*>(out);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t) {
      const M a = M(alpha[r.segment]), b = M(beta[r.segment]);
#pragma omp simd
      for (int64_t i = r.begin; i < r.end; ++i)
        po[i] = Elem<T>::store(a * Elem<T>::load(px[i]) + b * Elem<T>::load(py[i]));
    });
  });
}

}  // namespace accord::cpu
