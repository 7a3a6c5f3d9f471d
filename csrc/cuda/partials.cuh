#pragma once
// Second pass of every reduction: per-tile partials -> per-segment sums, in a fixed order.
//
// partials is [num_tiles][width] float64 (one row per tile, written by the first pass). For
// segment l with tiles t0..t1-1, component c:
//   the tiles are cut into R = 256 / W contiguous runs of ceil((t1 - t0) / R) tiles
//   (W = lanes per block, the power of two >= min(width, 32)); each run is summed in tile order,
//   then the R run sums are added in run order.
// The result depends only on the layout and width, never on timing: bitwise deterministic.
// A segment of at most R tiles is summed strictly in tile order, like the CPU backend; longer
// segments use the blocked order, which keeps the pass short (a strictly sequential sum over
// thousands of tiles would be one dependent chain of float64 adds). Empty segments give 0.
#include "common.cuh"

namespace accord::cuda::detail {

template <typename Writer>
__global__ void __launch_bounds__(kBlock)
    sum_partials_kernel(const double* __restrict__ partials, int64_t width,
                        const int64_t* __restrict__ tile_start, int64_t num_segments,
                        int lanes_log2, Writer writer) {
  __shared__ double run_sums[kBlock];
  const int lanes = 1 << lanes_log2;
  const int runs = kBlock >> lanes_log2;
  const int lane = threadIdx.x & (lanes - 1);
  const int run = threadIdx.x >> lanes_log2;
  const int64_t groups = (width + lanes - 1) >> lanes_log2;
  for (int64_t job = blockIdx.x; job < num_segments * groups; job += gridDim.x) {
    const int64_t l = job / groups;
    const int64_t c = (job - l * groups) * lanes + lane;
    const int64_t t0 = tile_start[l], t1 = tile_start[l + 1];
    const int64_t per_run = (t1 - t0 + runs - 1) / runs;
    const int64_t tb = t0 + run * per_run;
    const int64_t te = tb + per_run < t1 ? tb + per_run : t1;
    double acc = 0.0;
    if (c < width) {
#pragma unroll 4
      for (int64_t t = tb; t < te; ++t) acc += partials[t * width + c];
    }
    run_sums[threadIdx.x] = acc;
    __syncthreads();
    if (run == 0 && c < width) {
      double s = 0.0;
      for (int r = 0; r < runs; ++r) s += run_sums[r * lanes + lane];
      writer(l, c, s);
    }
    __syncthreads();
  }
}

// Launches the second pass; writer(l, c, value) stores component c of segment l. Also covers
// num_tiles == 0 (every segment empty: all zeros). Nothing is launched when num_segments == 0.
template <typename Writer>
void sum_partials(const double* partials, int64_t width, const Layout& layout, Writer writer,
                  cudaStream_t stream, const char* what) {
  if (layout.num_segments == 0 || width == 0) return;
  int lanes_log2 = 0;
  while ((int64_t(1) << lanes_log2) < width && lanes_log2 < 5) ++lanes_log2;
  const int64_t groups = (width + (int64_t(1) << lanes_log2) - 1) >> lanes_log2;
  sum_partials_kernel<Writer><<<grid_for(layout.num_segments * groups), kBlock, 0, stream>>>(
      partials, width, layout.tile_start, layout.num_segments, lanes_log2, writer);
  check_launch(what);
}

}  // namespace accord::cuda::detail
