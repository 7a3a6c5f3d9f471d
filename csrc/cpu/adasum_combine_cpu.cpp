// Adasum pair rule per segment: one pass for the dots (unless given), one for the combine.
//
// The combine is a streaming ca*a + cb*b in opmath precision, written with vec.h's explicit lanes
// (16-bit loads/stores vectorise too) and multiversioned without FMA, so every variant rounds
// exactly like the scalar expression Elem<T>::store(ca * load(a) + cb * load(b)).
#include <vector>

#include "accord/kernels.h"
#include "accord/pair_math.h"
#include "parallel.h"
#include "vec.h"

namespace accord::cpu {
namespace {

template <typename T>
ACCORD_ALWAYS_INLINE void tile_combine(const T* a, const T* b, T* out, int64_t len, double ca_d,
                                       double cb_d) {
  using M = typename Elem<T>::opmath;
  const M ca = M(ca_d), cb = M(cb_d);
  int64_t i = 0;
  for (; i + vec::kWidth <= len; i += vec::kWidth)
    vec::store8(out + i, ca * vec::load8(a + i) + cb * vec::load8(b + i));
  for (; i < len; ++i)
    out[i] = Elem<T>::store(ca * Elem<T>::load(a[i]) + cb * Elem<T>::load(b[i]));
}

ACCORD_CLONES void combine_f32(const float* a, const float* b, float* o, int64_t n, double ca,
                               double cb) {
  tile_combine(a, b, o, n, ca, cb);
}
ACCORD_CLONES void combine_f64(const double* a, const double* b, double* o, int64_t n, double ca,
                               double cb) {
  tile_combine(a, b, o, n, ca, cb);
}
ACCORD_CLONES void combine_f16(const half_t* a, const half_t* b, half_t* o, int64_t n, double ca,
                               double cb) {
  tile_combine(a, b, o, n, ca, cb);
}
ACCORD_CLONES void combine_bf16(const bfloat16_t* a, const bfloat16_t* b, bfloat16_t* o,
                                int64_t n, double ca, double cb) {
  tile_combine(a, b, o, n, ca, cb);
}

void combine_tile(const float* a, const float* b, float* o, int64_t n, double ca, double cb) {
  combine_f32(a, b, o, n, ca, cb);
}
void combine_tile(const double* a, const double* b, double* o, int64_t n, double ca, double cb) {
  combine_f64(a, b, o, n, ca, cb);
}
void combine_tile(const half_t* a, const half_t* b, half_t* o, int64_t n, double ca, double cb) {
  combine_f16(a, b, o, n, ca, cb);
}
void combine_tile(const bfloat16_t* a, const bfloat16_t* b, bfloat16_t* o, int64_t n, double ca,
                  double cb) {
  combine_bf16(a, b, o, n, ca, cb);
}

}  // namespace

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
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t) {
      const PairCoeffs& c = coeffs[r.segment];
      combine_tile(pa + r.begin, pb + r.begin, po + r.begin, r.end - r.begin, c.a, c.b);
    });
  });
}

}  // namespace accord::cpu
