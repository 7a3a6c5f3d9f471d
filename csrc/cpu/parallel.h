#pragma once
// OpenMP helpers shared by the CPU kernels. Work is always split by tiles (layout.h), whose
// boundaries do not depend on the thread count; that keeps results bitwise deterministic.
#include <cstdint>
#include <vector>

#include "accord/layout.h"

namespace accord::cpu {

// Below this many elements a kernel runs on the calling thread: forking a team costs more
// than the work (it matters for the 4 KiB latency path of the allreduce).
constexpr int64_t kParallelMinElements = 1 << 15;

template <typename F>
void for_each_tile(const Layout& layout, int64_t total_elements, F&& body) {
  const int64_t num_tiles = layout.num_tiles;
#if defined(ACCORD_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (total_elements >= kParallelMinElements)
#endif
  for (int64_t t = 0; t < num_tiles; ++t) body(tile_range(layout, t), t);
}

// out[l][w] = sum over the tiles t of segment l, in tile order, of partials[t][w].
inline void sum_partials_by_segment(const Layout& layout, const std::vector<double>& partials,
                                    int64_t width, double* out) {
  for (int64_t l = 0; l < layout.num_segments; ++l) {
    double* o = out + l * width;
    for (int64_t w = 0; w < width; ++w) o[w] = 0.0;
    for (int64_t t = layout.tile_start[l]; t < layout.tile_start[l + 1]; ++t)
      for (int64_t w = 0; w < width; ++w) o[w] += partials[t * width + w];
  }
}

inline int64_t layout_elements(const Layout& layout) {
  return layout.num_segments > 0 ? layout.offsets[layout.num_segments] : 0;
}

}  // namespace accord::cpu
