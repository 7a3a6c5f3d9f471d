// Per-segment (a.b, a.a, b.b) in float64: one block per tile -> one partial row
// (ab, aa, bb, sa, sb) (scaled_dots.h), then one block per segment adds its tiles' rows.
//
// float64 tiles whose plain squared norms leave the plain range are summed a second time with
// the elements scaled by powers of two (the tile is still in L2), so finite inputs give finite
// dots; ordinary data and 16/32-bit inputs never take that branch.
#include <cub/block/block_reduce.cuh>

#include <type_traits>

#include "accord/kernels.h"
#include "accord/scaled_dots.h"
#include "common.cuh"

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

// Largest |a| and |b|; `x > m` skips NaN (the scaled sums carry it).
struct Max2 {
  double a, b;
};
struct Max2Op {
  __device__ __forceinline__ Max2 operator()(const Max2& x, const Max2& y) const {
    return {y.a > x.a ? y.a : x.a, y.b > x.b ? y.b : x.b};
  }
};

struct Exp2 {
  int a, b;
};
struct Exp2Max {
  __device__ __forceinline__ Exp2 operator()(const Exp2& x, const Exp2& y) const {
    return {y.a > x.a ? y.a : x.a, y.b > x.b ? y.b : x.b};
  }
};

template <typename T>
__global__ void __launch_bounds__(kBlock)
    dots_tiles_kernel(const T* __restrict__ a, const T* __restrict__ b, Layout layout,
                      double* __restrict__ partials) {
  using Reduce = cub::BlockReduce<Dots3, kBlock>;
  using MaxReduce = cub::BlockReduce<Max2, kBlock>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ typename MaxReduce::TempStorage max_temp;
  __shared__ bool rescale, zero_sides;
  __shared__ int exps[2];
  __shared__ double zero_row[3];
  constexpr int64_t W = kDotsPartialWidth;
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
    Dots3 s = Reduce(temp).Reduce(d, Dots3Sum());
    if constexpr (std::is_same<T, double>::value) {
      if (threadIdx.x == 0) rescale = !plain_dots_ok(s.aa, s.bb);
      __syncthreads();  // also: temp may be reused
      if (rescale) {    // the same value in every thread of the block
        Max2 m{0.0, 0.0};
        visit2(a, b, r.begin, r.end, [&](double x, double y) {
          m.a = fabs(x) > m.a ? fabs(x) : m.a;
          m.b = fabs(y) > m.b ? fabs(y) : m.b;
        });
        const Max2 mm = MaxReduce(max_temp).Reduce(m, Max2Op());
        if (threadIdx.x == 0) {  // an all-zero side finishes the tile (scaled_dots.h)
          double p[kDotsPartialWidth] = {s.ab, s.aa, s.bb, 0.0, 0.0};
          zero_sides = finish_zero_sides(p, mm.a, mm.b);
          if (zero_sides) {
            zero_row[0] = p[0];
            zero_row[1] = p[1];
            zero_row[2] = p[2];
            exps[0] = int(p[3]);
            exps[1] = int(p[4]);
          } else {
            exps[0] = scale_exponent(mm.a);
            exps[1] = scale_exponent(mm.b);
          }
        }
        __syncthreads();
        if (zero_sides) {
          s = Dots3{zero_row[0], zero_row[1], zero_row[2]};
        } else {
          const ScaleFactors fa = scale_factors(exps[0]), fb = scale_factors(exps[1]);
          Dots3 e{0.0, 0.0, 0.0};
          visit2(a, b, r.begin, r.end, [&](double xs, double ys) {
            const double x = apply_scale(xs, fa), y = apply_scale(ys, fb);
            e.ab += x * y;
            e.aa += x * x;
            e.bb += y * y;
          });
          s = Reduce(temp).Reduce(e, Dots3Sum());
        }
      }
    }
    if (threadIdx.x == 0) {
      double* p = partials + t * W;
      p[0] = s.ab;
      p[1] = s.aa;
      p[2] = s.bb;
      const bool scaled = std::is_same<T, double>::value && rescale;
      p[3] = scaled ? double(exps[0]) : 0.0;
      p[4] = scaled ? double(exps[1]) : 0.0;
    }
    __syncthreads();  // temp, rescale, zero_sides, exps and zero_row are reused by the next tile
  }
}

// One block per segment: the segment's tiles are cut into kBlock contiguous runs of
// ceil(tiles / kBlock) tiles. First the largest exponents (a max: order-free), then each run is
// added in tile order (scaled_dots.h add_partial), then the run sums pairwise in a fixed tree
// (run q + run q + 128, ..., a log2(kBlock)-deep chain rather than a kBlock-long one). Depends
// only on the layout: bitwise deterministic. Empty segments give zeros.
template <typename Writer>
__global__ void __launch_bounds__(kBlock)
    sum_dots_kernel(const double* __restrict__ partials, const int64_t* __restrict__ tile_start,
                    int64_t num_segments, Writer writer) {
  using ExpReduce = cub::BlockReduce<Exp2, kBlock>;
  __shared__ typename ExpReduce::TempStorage temp;
  __shared__ int seg_exps[2];
  __shared__ double run_sums[3][kBlock];
  constexpr int64_t W = kDotsPartialWidth;
  for (int64_t l = blockIdx.x; l < num_segments; l += gridDim.x) {
    const int64_t t0 = tile_start[l], t1 = tile_start[l + 1];
    const int64_t per_run = (t1 - t0 + kBlock - 1) / kBlock;
    const int64_t tb = t0 + threadIdx.x * per_run;
    const int64_t te = tb + per_run < t1 ? tb + per_run : t1;
    ScaledDots acc = empty_scaled_dots();
    for (int64_t t = tb; t < te; ++t) max_exponents(acc, partials + t * W);
    const Exp2 e = ExpReduce(temp).Reduce(Exp2{acc.sa, acc.sb}, Exp2Max());
    if (threadIdx.x == 0) {
      seg_exps[0] = e.a;
      seg_exps[1] = e.b;
    }
    __syncthreads();
    acc = ScaledDots{0.0, 0.0, 0.0, seg_exps[0], seg_exps[1]};
    for (int64_t t = tb; t < te; ++t) add_partial(acc, partials + t * W);
    run_sums[0][threadIdx.x] = acc.ab;
    run_sums[1][threadIdx.x] = acc.aa;
    run_sums[2][threadIdx.x] = acc.bb;
    __syncthreads();
    for (int stride = kBlock / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride)
        for (int c = 0; c < 3; ++c) run_sums[c][threadIdx.x] += run_sums[c][threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0)
      writer(l, ScaledDots{run_sums[0][0], run_sums[1][0], run_sums[2][0], seg_exps[0],
                           seg_exps[1]});
    __syncthreads();  // temp, seg_exps and run_sums are reused by the next segment
  }
}

// segment_dots' result: the float64 values (Inf where a square norm overflows).
struct PlainWriter {
  double* dots;
  __device__ __forceinline__ void operator()(int64_t l, const ScaledDots& d) const {
    unscaled_dots(d, dots + l * 3);
  }
};

// adasum_combine's own dots: [L][kDotsPartialWidth] scaled rows.
struct ScaledWriter {
  double* dots;
  __device__ __forceinline__ void operator()(int64_t l, const ScaledDots& d) const {
    double* o = dots + l * kDotsPartialWidth;
    o[0] = d.ab;
    o[1] = d.aa;
    o[2] = d.bb;
    o[3] = double(d.sa);
    o[4] = double(d.sb);
  }
};

template <typename Writer>
void run_segment_dots(DType dtype, const void* a, const void* b, const Layout& layout,
                      Writer writer, void* workspace, cudaStream_t s) {
  double* partials = static_cast<double*>(workspace);
  if (layout.num_tiles > 0) {
    dispatch_dtype(dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      dots_tiles_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, s>>>(
          static_cast<const T*>(a), static_cast<const T*>(b), layout, partials);
    });
    check_launch("segment_dots");
  }
  sum_dots_kernel<Writer><<<grid_for(layout.num_segments), kBlock, 0, s>>>(
      partials, layout.tile_start, layout.num_segments, writer);
  check_launch("segment_dots");
}

}  // namespace

void segment_dots_scaled(DType dtype, const void* a, const void* b, const Layout& layout,
                         double* scaled, void* workspace, cudaStream_t stream) {
  if (layout.num_segments == 0) return;
  run_segment_dots(dtype, a, b, layout, ScaledWriter{scaled}, workspace, stream);
}

}  // namespace detail

int64_t segment_dots_workspace_bytes(const Layout& layout) {
  return layout.num_tiles * kDotsPartialWidth * int64_t(sizeof(double));
}

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots,
                  void* workspace, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0) return;
  run_segment_dots(dtype, a, b, layout, PlainWriter{dots}, workspace, as_stream(stream));
}

}  // namespace accord::cuda
