// Weighted sums of k vectors and axpby, with per-segment coefficients, in opmath precision.
#include <algorithm>
#include <type_traits>

#include "accord/kernels.h"
#include "parallel.h"
#include "vec.h"

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

namespace {

// weighted_sum: every element is acc = 0; acc = acc + M(w_i) * v_i[e] for i = 0..k-1, in opmath,
// then stored (the CUDA kernel's order and rounding; no FMA contraction). A tile is walked in
// chunks of kChunk elements whose accumulators stay in registers while the k rows are read;
// each row read is prefetched kPrefetchBytes ahead (k concurrent streams defeat the hardware
// prefetcher, which also stops at every 4 KiB page). The tail goes through the scalar dtype.h
// conversions, which the vec.h lane code reproduces bit for bit.
constexpr int kPrefetchBytes = 2048;

template <typename T>
ACCORD_ALWAYS_INLINE void tile_wsum_body(const T* v, int64_t k, int64_t n, const double* w,
                                         int64_t begin, int64_t len, T* out) {
  using M = typename Elem<T>::opmath;
  using V = decltype(vec::load8(v));
  constexpr int kVecs = std::is_same_v<M, double> ? 4 : 8;  // 8 ymm of accumulators
  constexpr int64_t kChunk = kVecs * vec::kWidth;
  constexpr int kLineElems = 64 / int(sizeof(T));
  int64_t e = 0;
  for (; e + kChunk <= len; e += kChunk) {
    V acc[kVecs];
    for (int q = 0; q < kVecs; ++q) acc[q] = V{};
    for (int64_t i = 0; i < k; ++i) {
      const T* src = v + i * n + begin + e;
      for (int64_t c = 0; c < kChunk; c += kLineElems)
        __builtin_prefetch(reinterpret_cast<const char*>(src + c) + kPrefetchBytes);
      const M wi = M(w[i]);
      for (int q = 0; q < kVecs; ++q) acc[q] = acc[q] + wi * vec::load8(src + q * vec::kWidth);
    }
    for (int q = 0; q < kVecs; ++q) vec::store8(out + begin + e + q * vec::kWidth, acc[q]);
  }
  for (; e < len; ++e) {
    M acc = M(0);
    for (int64_t i = 0; i < k; ++i) acc = acc + M(w[i]) * Elem<T>::load(v[i * n + begin + e]);
    out[begin + e] = Elem<T>::store(acc);
  }
}

template <typename T>
void tile_wsum(const T* v, int64_t k, int64_t n, const double* w, int64_t begin, int64_t len,
               T* out) {
  tile_wsum_body(v, k, n, w, begin, len, out);
}

#if ACCORD_X86_DISPATCH
// The same code compiled for AVX2 (wider registers; no FMA, so the rounding is unchanged).
template <typename T>
ACCORD_TARGET_AVX2 void tile_wsum_avx2(const T* v, int64_t k, int64_t n, const double* w,
                                       int64_t begin, int64_t len, T* out) {
  tile_wsum_body(v, k, n, w, begin, len, out);
}
#endif

}  // namespace

void weighted_sum(DType dtype, const void* vectors, int64_t k, const double* weights,
                  const Layout& layout, void* out) {
  const int64_t n = layout_elements(layout);
  const bool avx2 = vec::isa() == vec::Isa::kAvx2;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* v = static_cast<const T*>(vectors);
    T* po = static_cast<T*>(out);
    for_each_tile(layout, n * k, [&](TileRange r, int64_t) {
      const double* w = weights + r.segment * k;
#if ACCORD_X86_DISPATCH
      if (avx2) return tile_wsum_avx2(v, k, n, w, r.begin, r.end - r.begin, po);
#endif
      (void)avx2;
      tile_wsum(v, k, n, w, r.begin, r.end - r.begin, po);
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
