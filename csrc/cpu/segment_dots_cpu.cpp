// Per-segment a.b, a.a and b.b in one pass, accumulated in float64.
#include <vector>

#include "accord/kernels.h"
#include "parallel.h"

namespace accord::cpu {
namespace {

template <typename T>
void tile_dots(const T* a, const T* b, int64_t begin, int64_t end, double* partial) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
#pragma omp simd reduction(+ : ab, aa, bb)
  for (int64_t i = begin; i < end; ++i) {
    const double x = double(Elem<T>::load(a[i]));
    const double y = double(Elem<T>::load(b[i]));
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  partial[0] = ab;
  partial[1] = aa;
  partial[2] = bb;
}

}  // namespace

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots) {
  std::vector<double> partials(size_t(layout.num_tiles) * 3);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t t) {
      tile_dots(pa, pb, r.begin, r.end, &partials[size_t(t) * 3]);
    });
  });
  sum_partials_by_segment(layout, partials, 3, dots);
}

}  // namespace accord::cpu
