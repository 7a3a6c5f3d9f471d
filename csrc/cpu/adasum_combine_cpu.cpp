// Adasum pair rule per segment: one pass for the dots (unless given), one for the combine.
#include <vector>

#include "accord/kernels.h"
#include "accord/pair_math.h"
#include "parallel.h"

namespace accord::cpu {

void adasum_combine(DType dtype, const void* a, const void* b, void* out, const Layout& layout,
                    const double* dots, double wa, double wb) {
  std::vector<double> own_dots;
  if (dots == nullptr) {
    own_dots.resize(size_t(layout.num_segments) * 3);
    segment_dots(dtype, a, b, layout, own_dots.data());
    dots = own_dots.data();
  }
  std::vector<PairCoeffs> coeffs(size_t(layout.num_segments));
  for (int64_t l = 0; l < layout.num_segments; ++l)
    coeffs[l] = adasum_coeffs(dots[3 * l], dots[3 * l + 1], dots[3 * l + 2], wa, wb);

  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using M = typename Elem<T>::opmath;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t) {
      const M ca = M(coeffs[r.segment].a), cb = M(coeffs[r.segment].b);
#pragma omp simd
      for (int64_t i = r.begin; i < r.end; ++i)
        po[i] = Elem<T>::store(ca * Elem<T>::load(pa[i]) + cb * Elem<T>::load(pb[i]));
    });
  });
}

}  // namespace accord::cpu
