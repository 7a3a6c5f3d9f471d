// Adasum pair rule per segment: the dots (segment_dots.cu, unless given), then one elementwise
// pass, one block per tile, whose coefficients come from pair_math.h once per tile.
#include <type_traits>

#include "accord/kernels.h"
#include "accord/pair_math.h"
#include "common.cuh"

namespace accord::cuda {
namespace detail {
namespace {

template <typename T>
__global__ void __launch_bounds__(kBlock)
    combine_tiles_kernel(const T* a, const T* b, T* out, Layout layout,
                         const double* __restrict__ dots, double wa, double wb) {
  using M = typename Elem<T>::opmath;
  __shared__ double coeffs[2];
  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    if (threadIdx.x == 0) {
      const double* d = dots + r.segment * 3;
      const PairCoeffs c = adasum_coeffs(d[0], d[1], d[2], wa, wb);
      coeffs[0] = c.a;
      coeffs[1] = c.b;
    }
    __syncthreads();
    if (!std::is_same<M, double>::value && needs_float64_combine(PairCoeffs{coeffs[0], coeffs[1]})) {
      const double ca = coeffs[0], cb = coeffs[1];  // rare: see pair_math.h
      map2(a, b, out, r.begin, r.end, [ca, cb](T x, T y) {
        return Elem<T>::store(M(add_rn(mul_rn(ca, double(Elem<T>::load(x))),
                                       mul_rn(cb, double(Elem<T>::load(y))))));
      });
    } else {
      const M ca = M(coeffs[0]), cb = M(coeffs[1]);
      map2(a, b, out, r.begin, r.end, [ca, cb](T x, T y) {
        return Elem<T>::store(add_rn(mul_rn(ca, Elem<T>::load(x)), mul_rn(cb, Elem<T>::load(y))));
      });
    }
    __syncthreads();  // coeffs is rewritten for the next tile
  }
}

}  // namespace
}  // namespace detail

int64_t adasum_combine_workspace_bytes(const Layout& layout) {
  return layout.num_segments * 3 * int64_t(sizeof(double)) + segment_dots_workspace_bytes(layout);
}

void adasum_combine(DType dtype, const void* a, const void* b, void* out, const Layout& layout,
                    const double* dots, double wa, double wb, void* workspace, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0 || layout.num_tiles == 0) return;  // no element to write
  if (dots == nullptr) {
    double* own = static_cast<double*>(workspace);
    segment_dots(dtype, a, b, layout, own, own + layout.num_segments * 3, stream);
    dots = own;
  }
  const cudaStream_t s = as_stream(stream);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    combine_tiles_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, s>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), layout, dots,
        wa, wb);
  });
  check_launch("adasum_combine");
}

}  // namespace accord::cuda
