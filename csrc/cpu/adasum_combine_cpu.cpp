// Adasum pair rule per segment: one pass for the dots (unless given), one for the combine.
//
// The combine is a streaming ca*a + cb*b in opmath precision: portable vec.h lanes (16-bit loads
// and stores vectorise too) plus an x86 AVX2/F16C version chosen at run time, both rounding
// exactly like the scalar Elem<T>::store(ca * load(a) + cb * load(b)) (no FMA contraction).
#include <type_traits>
#include <vector>

#include "accord/kernels.h"
#include "accord/pair_math.h"
#include "parallel.h"
#include "vec.h"

namespace accord::cpu {
namespace {

// Software prefetch distance of the input streams (as in segment_dots: keeps more misses in
// flight than the hardware prefetcher alone; ~7% on a 64 MiB pair with 2 threads).
constexpr int kPrefetchBytes = 2048;

// Portable version (vec.h lanes; the tail goes through the scalar conversions of dtype.h, which
// the lane code reproduces bit for bit).
template <typename T>
void tile_combine(const T* a, const T* b, T* out, int64_t len, double ca_d, double cb_d) {
  using M = typename Elem<T>::opmath;
  const M ca = M(ca_d), cb = M(cb_d);
  int64_t i = 0;
  for (; i + vec::kWidth <= len; i += vec::kWidth)
    vec::store8(out + i, ca * vec::load8(a + i) + cb * vec::load8(b + i));
  for (; i < len; ++i)
    out[i] = Elem<T>::store(ca * Elem<T>::load(a[i]) + cb * Elem<T>::load(b[i]));
}

#if ACCORD_X86_DISPATCH
// AVX2 + F16C version for the float opmath types, compiled without FMA so the rounding is that
// of the scalar expression (ca * a, cb * b and their sum each rounded to float).
template <typename T>
ACCORD_TARGET_AVX2 void tile_combine_avx2(const T* a, const T* b, T* out, int64_t len,
                                          double ca_d, double cb_d) {
  const float ca = float(ca_d), cb = float(cb_d);
  const __m256 va = _mm256_set1_ps(ca), vb = _mm256_set1_ps(cb);
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(a + i) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + i) + kPrefetchBytes, _MM_HINT_T0);
    for (int h = 0; h < 16; h += 8)
      vec::avx2_store8(out + i + h,
                       _mm256_add_ps(_mm256_mul_ps(va, vec::avx2_load8(a + i + h)),
                                     _mm256_mul_ps(vb, vec::avx2_load8(b + i + h))));
  }
  for (; i < len; ++i)
    out[i] = Elem<T>::store(ca * Elem<T>::load(a[i]) + cb * Elem<T>::load(b[i]));
}
#endif

// The rare wide-coefficient or scaled segments (pair_math.h: needs_float64_combine), scalar
// float64: c.a (x 2^ea) + c.b (y 2^eb).
template <typename T>
void tile_combine_float64(const T* a, const T* b, T* out, int64_t len, const PairCoeffs& c) {
  using M = typename Elem<T>::opmath;
  for (int64_t i = 0; i < len; ++i)
    out[i] = Elem<T>::store(
        M(combine_float64(c, double(Elem<T>::load(a[i])), double(Elem<T>::load(b[i])))));
}

template <typename T>
void combine_tile(const T* a, const T* b, T* o, int64_t n, const PairCoeffs& c, bool avx2) {
  // float64 opmath needs the scalar path only for exponents; float opmath also for wide values
  if (std::is_same_v<T, double> ? (c.ea != 0 || c.eb != 0) : needs_float64_combine(c))
    return tile_combine_float64(a, b, o, n, c);
  const double ca = c.a, cb = c.b;
#if ACCORD_X86_DISPATCH
  if constexpr (!std::is_same_v<T, double>) {
    if (avx2) return tile_combine_avx2(a, b, o, n, ca, cb);
  }
#endif
  (void)avx2;
  tile_combine(a, b, o, n, ca, cb);
}

}  // namespace

void adasum_combine(DType dtype, const void* a, const void* b, void* out, const Layout& layout,
                    const double* dots, double wa, double wb) {
  // Own dots are scaled (finite for finite inputs); given dots are plain float64 values.
  std::vector<ScaledDots> scaled(size_t(layout.num_segments));
  if (dots == nullptr) {
    segment_dots_scaled(dtype, a, b, layout, scaled.data());
  } else {
    for (int64_t l = 0; l < layout.num_segments; ++l) scaled[l] = given_dots(dots + 3 * l);
  }
  std::vector<PairCoeffs> coeffs(size_t(layout.num_segments));
  for (int64_t l = 0; l < layout.num_segments; ++l) coeffs[l] = adasum_coeffs(scaled[l], wa, wb);

  const bool avx2 = vec::isa() == vec::Isa::kAvx2;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t) {
      combine_tile(pa + r.begin, pb + r.begin, po + r.begin, r.end - r.begin, coeffs[r.segment],
                   avx2);
    });
  });
}

}  // namespace accord::cpu
