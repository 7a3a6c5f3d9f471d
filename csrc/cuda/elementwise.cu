// Weighted sums of k vectors and axpby with per-segment coefficients, in opmath precision.
// One block per tile; each element is computed by one thread, in the CPU backend's order.
#include "accord/kernels.h"
#include "common.cuh"

namespace accord::cuda {
namespace detail {
namespace {

// out[e] = sum_{i=0..k-1} M(w[l][i]) * v_i[e], accumulated in M from 0 in vector order.
// Each thread reads all k inputs of its kUnroll elements before storing them, so out may even
// alias one of the vectors.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    weighted_sum_tiles_kernel(const T* v, int64_t k, const double* __restrict__ weights,
                              Layout layout, T* out) {
  using M = typename Elem<T>::opmath;
  const int64_t n = layout.offsets[layout.num_segments];
  constexpr int64_t kSpan = int64_t(kUnroll) * kBlock;
  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    const double* w = weights + r.segment * k;
    for (int64_t base = r.begin; base < r.end; base += kSpan) {
      const int64_t i0 = base + threadIdx.x;
      M acc[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) acc[u] = M(0);
      if (base + kSpan <= r.end) {  // full span (block-uniform branch)
        for (int64_t j = 0; j < k; ++j) {
          const M wj = M(w[j]);
          const T* vj = v + j * n;
          T x[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) x[u] = vj[i0 + u * kBlock];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) acc[u] = add_rn(acc[u], mul_rn(wj, Elem<T>::load(x[u])));
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) out[i0 + u * kBlock] = Elem<T>::store(acc[u]);
      } else {
        for (int64_t j = 0; j < k; ++j) {
          const M wj = M(w[j]);
          const T* vj = v + j * n;
#pragma unroll
          for (int u = 0; u < kUnroll; ++u)
            if (i0 + u * kBlock < r.end)
              acc[u] = add_rn(acc[u], mul_rn(wj, Elem<T>::load(vj[i0 + u * kBlock])));
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (i0 + u * kBlock < r.end) out[i0 + u * kBlock] = Elem<T>::store(acc[u]);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock)
    axpby_tiles_kernel(const T* x, const T* y, T* out, Layout layout,
                       const double* __restrict__ alpha, const double* __restrict__ beta) {
  using M = typename Elem<T>::opmath;
  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    const M a = M(alpha[r.segment]), b = M(beta[r.segment]);
    map2(x, y, out, r.begin, r.end, [a, b](T xs, T ys) {
      return Elem<T>::store(add_rn(mul_rn(a, Elem<T>::load(xs)), mul_rn(b, Elem<T>::load(ys))));
    });
  }
}

}  // namespace
}  // namespace detail

void weighted_sum(DType dtype, const void* vectors, int64_t k, const double* weights,
                  const Layout& layout, void* out, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0 || layout.num_tiles == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    weighted_sum_tiles_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, as_stream(stream)>>>(
        static_cast<const T*>(vectors), k, weights, layout, static_cast<T*>(out));
  });
  check_launch("weighted_sum");
}

void axpby(DType dtype, const void* x, const void* y, void* out, const Layout& layout,
           const double* alpha, const double* beta, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0 || layout.num_tiles == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    axpby_tiles_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, as_stream(stream)>>>(
        static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(out), layout, alpha,
        beta);
  });
  check_launch("axpby");
}

}  // namespace accord::cuda
