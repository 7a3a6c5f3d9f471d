// Per-segment (a.b, a.a, b.b) in float64: one block per tile -> 3 partials, then the ordered
// per-segment sum (partials.cuh).
#include <cub/block/block_reduce.cuh>

#include "accord/kernels.h"
#include "common.cuh"
#include "partials.cuh"

namespace accord::cuda {
namespace detail {
namespace {

struct Dots3 {
  double ab, aa, bb;
};

struct Dots3Sum {
  __device__ __forceinline__ Dots3 operator()(const Dots3& x, const Dots3& y) const {
    return {x.ab + y.ab, x.aa + y.aa, x.bb + y.bb};
  }
};

template <typename T>
__global__ void __launch_bounds__(kBlock)
    dots_tiles_kernel(const T* __restrict__ a, const T* __restrict__ b, Layout layout,
                      double* __restrict__ partials) {
  using Reduce = cub::BlockReduce<Dots3, kBlock>;
  __shared__ typename Reduce::TempStorage temp;
  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    Dots3 d{0.0, 0.0, 0.0};
    visit2(a, b, r.begin, r.end, [&](T xs, T ys) {
      const double x = double(Elem<T>::load(xs));
      const double y = double(Elem<T>::load(ys));
      d.ab += x * y;
      d.aa += x * x;
      d.bb += y * y;
    });
    const Dots3 s = Reduce(temp).Reduce(d, Dots3Sum());
    if (threadIdx.x == 0) {
      partials[t * 3 + 0] = s.ab;
      partials[t * 3 + 1] = s.aa;
      partials[t * 3 + 2] = s.bb;
    }
    __syncthreads();  // temp is reused by the next tile
  }
}

struct DotsWriter {
  double* dots;
  __device__ __forceinline__ void operator()(int64_t l, int64_t c, double v) const {
    dots[l * 3 + c] = v;
  }
};

}  // namespace
}  // namespace detail

int64_t segment_dots_workspace_bytes(const Layout& layout) {
  return layout.num_tiles * 3 * int64_t(sizeof(double));
}

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots,
                  void* workspace, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0) return;
  const cudaStream_t s = as_stream(stream);
  double* partials = static_cast<double*>(workspace);
  if (layout.num_tiles > 0) {
    dispatch_dtype(dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      dots_tiles_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, s>>>(
          static_cast<const T*>(a), static_cast<const T*>(b), layout, partials);
    });
    check_launch("segment_dots");
  }
  sum_partials(partials, 3, layout, DotsWriter{dots}, s, "segment_dots");
}

}  // namespace accord::cuda
