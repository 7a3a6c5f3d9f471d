// Adasum pair rule per segment: the dots (segment_dots.cu, scaled, unless given), then one
// elementwise pass, one block per tile, whose coefficients come from pair_math.h once per tile.
#include <type_traits>

#include "accord/kernels.h"
#include "accord/pair_math.h"
#include "common.cuh"

namespace accord::cuda {
namespace detail {

// segment_dots.cu: [L][kDotsPartialWidth] scaled dots (scaled_dots.h).
void segment_dots_scaled(DType dtype, const void* a, const void* b, const Layout& layout,
                         double* scaled, void* workspace, cudaStream_t stream);

namespace {

// dots: [L][3] plain float64 values given by the caller (dots_width 3), or the kernel's own
// [L][5] scaled rows (dots_width 5).
template <typename T>
__global__ void __launch_bounds__(kBlock)
    combine_tiles_kernel(const T* a, const T* b, T* out, Layout layout,
                         const double* __restrict__ dots, int dots_width, double wa, double wb) {
  using M = typename Elem<T>::opmath;
  __shared__ double coeffs[2];
  __shared__ int exps[2];
  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    if (threadIdx.x == 0) {
      const double* d = dots + r.segment * dots_width;
      const ScaledDots sd = dots_width == kDotsPartialWidth
                                ? ScaledDots{d[0], d[1], d[2], int(d[3]), int(d[4])}
                                : given_dots(d);
      const PairCoeffs pc = adasum_coeffs(sd, wa, wb);
      coeffs[0] = pc.a;
      coeffs[1] = pc.b;
      exps[0] = pc.ea;
      exps[1] = pc.eb;
    }
    __syncthreads();
    PairCoeffs c;
    c.a = coeffs[0];
    c.b = coeffs[1];
    c.ea = exps[0];
    c.eb = exps[1];
    // float64 opmath needs the float64 path only for exponents; float opmath also for wide
    // coefficients (pair_math.h)
    const bool wide = std::is_same<M, double>::value ? (c.ea != 0 || c.eb != 0)
                                                     : needs_float64_combine(c);
    if (wide) {  // rare: see pair_math.h
      map2(a, b, out, r.begin, r.end, [c](T x, T y) {
        return Elem<T>::store(
            M(combine_float64(c, double(Elem<T>::load(x)), double(Elem<T>::load(y)))));
      });
    } else {
      const M ca = M(c.a), cb = M(c.b);
      map2(a, b, out, r.begin, r.end, [ca, cb](T x, T y) {
        return Elem<T>::store(add_rn(mul_rn(ca, Elem<T>::load(x)), mul_rn(cb, Elem<T>::load(y))));
      });
    }
    __syncthreads();  // coeffs and exps are rewritten for the next tile
  }
}

}  // namespace
}  // namespace detail

int64_t adasum_combine_workspace_bytes(const Layout& layout) {
  return layout.num_segments * kDotsPartialWidth * int64_t(sizeof(double)) +
         segment_dots_workspace_bytes(layout);
}

void adasum_combine(DType dtype, const void* a, const void* b, void* out, const Layout& layout,
                    const double* dots, double wa, double wb, void* workspace, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0 || layout.num_tiles == 0) return;  // no element to write
  const cudaStream_t s = as_stream(stream);
  int dots_width = 3;
  if (dots == nullptr) {
    double* own = static_cast<double*>(workspace);
    segment_dots_scaled(dtype, a, b, layout, own, own + layout.num_segments * kDotsPartialWidth,
                        s);
    dots = own;
    dots_width = kDotsPartialWidth;
  }
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    combine_tiles_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, s>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), layout, dots,
        dots_width, wa, wb);
  });
  check_launch("adasum_combine");
}

}  // namespace accord::cuda
