// Per-segment a.b, a.a and b.b in one pass, accumulated in float64.
//
// Within a tile, element i is accumulated into lane i % kLanes (in increasing i); the kLanes lane
// sums are then folded pairwise in a fixed order (lane j += lane j + w, for w = kLanes/2 .. 1).
// The portable version keeps the lanes in two-double vectors (native on SSE2 and NEON), the x86
// AVX2 version (chosen at run time) in four-double registers; both add in the same order and
// the products of float32 or 16-bit values are exact in float64, so FMA changes nothing: every
// version gives the same bits (float64 inputs always take the portable, FMA-free version).
//
// float64 tiles whose squared norms leave [kPlainDotsMin, kPlainDotsMax] are summed again with
// scaling (scaled_dots.h), so finite inputs give finite dots; ordinary data never takes that path.
//
// Why it looks like this (64 MiB float32 pair, 2 cores): the former `omp simd reduction` loop
// kept one accumulator per product and waited on add latency (~10 GB/s per pass); 16 lanes
// remove that, and a software prefetch kPrefetchBytes ahead keeps enough cache misses in
// flight to stream at the speed of a BLAS sdot over the same two arrays.
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "accord/kernels.h"
#include "accord/scaled_dots.h"
#include "parallel.h"
#include "vec.h"

namespace accord::cpu {
namespace {

constexpr int kLanes = 16;
constexpr int kPrefetchBytes = 2048;

typedef double f64x2 __attribute__((vector_size(16)));
typedef float f32x2 __attribute__((vector_size(8)));

// kLanes consecutive elements as kLanes / 2 pairs of doubles.
template <typename T>
ACCORD_ALWAYS_INLINE void load_pairs(const T* p, f64x2* out) {
  float buf[kLanes];  // 16-bit types: converted with vec.h (vectorised), then widened
  vec::storeu(buf, vec::load8(p));
  vec::storeu(buf + 8, vec::load8(p + 8));
  for (int q = 0; q < kLanes / 2; ++q)
    out[q] = __builtin_convertvector(vec::loadu<f32x2>(buf + 2 * q), f64x2);
}
template <>
ACCORD_ALWAYS_INLINE void load_pairs(const float* p, f64x2* out) {
  for (int q = 0; q < kLanes / 2; ++q)
    out[q] = __builtin_convertvector(vec::loadu<f32x2>(p + 2 * q), f64x2);
}
template <>
ACCORD_ALWAYS_INLINE void load_pairs(const double* p, f64x2* out) {
  for (int q = 0; q < kLanes / 2; ++q) out[q] = vec::loadu<f64x2>(p + 2 * q);
}

// Tail (fewer than kLanes elements left, element i + j into lane j) and the fixed lane fold.
template <typename T>
ACCORD_ALWAYS_INLINE void finish_tile(double* lab, double* laa, double* lbb, const T* a,
                                      const T* b, int64_t len, double* partial) {
  for (int64_t j = 0; j < len; ++j) {
    const double x = double(Elem<T>::load(a[j]));
    const double y = double(Elem<T>::load(b[j]));
    lab[j] += x * y;
    laa[j] += x * x;
    lbb[j] += y * y;
  }
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) {
      lab[j] += lab[j + w];
      laa[j] += laa[j + w];
      lbb[j] += lbb[j + w];
    }
  partial[0] = lab[0];
  partial[1] = laa[0];
  partial[2] = lbb[0];
}

// Portable version: lanes as kLanes / 2 two-double vectors.
template <typename T>
void tile_dots(const T* a, const T* b, int64_t len, double* partial) {
  constexpr int kPairs = kLanes / 2;
  f64x2 ab[kPairs] = {}, aa[kPairs] = {}, bb[kPairs] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    __builtin_prefetch(reinterpret_cast<const char*>(a + i) + kPrefetchBytes);
    __builtin_prefetch(reinterpret_cast<const char*>(b + i) + kPrefetchBytes);
    f64x2 x[kPairs], y[kPairs];
    load_pairs(a + i, x);
    load_pairs(b + i, y);
    for (int q = 0; q < kPairs; ++q) {
      ab[q] += x[q] * y[q];
      aa[q] += x[q] * x[q];
      bb[q] += y[q] * y[q];
    }
  }
  double lab[kLanes], laa[kLanes], lbb[kLanes];
  std::memcpy(lab, ab, sizeof lab);
  std::memcpy(laa, aa, sizeof laa);
  std::memcpy(lbb, bb, sizeof lbb);
  finish_tile(lab, laa, lbb, a + i, b + i, len - i, partial);
}

#if ACCORD_X86_DISPATCH
// AVX2 version, same lanes: register q of each product holds lanes 4q .. 4q+3. FMA is exact
// here (float64 products of float or 16-bit values are exact), so the bits match tile_dots.
template <typename T>
ACCORD_TARGET_AVX2_FMA void tile_dots_avx2(const T* a, const T* b, int64_t len,
                                           double* partial) {
  __m256d ab[4], aa[4], bb[4];
  for (int q = 0; q < 4; ++q) ab[q] = aa[q] = bb[q] = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    _mm_prefetch(reinterpret_cast<const char*>(a + i) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + i) + kPrefetchBytes, _MM_HINT_T0);
    const __m256 xs[2] = {vec::avx2_load8(a + i), vec::avx2_load8(a + i + 8)};
    const __m256 ys[2] = {vec::avx2_load8(b + i), vec::avx2_load8(b + i + 8)};
    for (int h = 0; h < 2; ++h) {
      const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(xs[h]));
      const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(xs[h], 1));
      const __m256d y0 = _mm256_cvtps_pd(_mm256_castps256_ps128(ys[h]));
      const __m256d y1 = _mm256_cvtps_pd(_mm256_extractf128_ps(ys[h], 1));
      ab[2 * h] = _mm256_fmadd_pd(x0, y0, ab[2 * h]);
      aa[2 * h] = _mm256_fmadd_pd(x0, x0, aa[2 * h]);
      bb[2 * h] = _mm256_fmadd_pd(y0, y0, bb[2 * h]);
      ab[2 * h + 1] = _mm256_fmadd_pd(x1, y1, ab[2 * h + 1]);
      aa[2 * h + 1] = _mm256_fmadd_pd(x1, x1, aa[2 * h + 1]);
      bb[2 * h + 1] = _mm256_fmadd_pd(y1, y1, bb[2 * h + 1]);
    }
  }
  double lab[kLanes], laa[kLanes], lbb[kLanes];
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_pd(lab + 4 * q, ab[q]);
    _mm256_storeu_pd(laa + 4 * q, aa[q]);
    _mm256_storeu_pd(lbb + 4 * q, bb[q]);
  }
  finish_tile(lab, laa, lbb, a + i, b + i, len - i, partial);
}
#endif

double max_abs(const double* x, int64_t len) {  // NaNs skipped (`v > m` is false)
  double m = 0.0;
  for (int64_t i = 0; i < len; ++i) m = std::fabs(x[i]) > m ? std::fabs(x[i]) : m;
  return m;
}

// The second pass of one float64 tile outside the plain range (rare): a tile with an all-zero
// side is finished from that side's maximum alone (scaled_dots.h finish_zero_sides); otherwise
// the maxima give the exponents and one pass over the scaled elements gives the sums (NaNs
// reach them). `partial` holds the plain sums on entry.
void tile_dots_scaled(const double* a, const double* b, int64_t len, double* partial) {
  const bool a_ok = plain_norm_ok(partial[1]), b_ok = plain_norm_ok(partial[2]);
  double ma = a_ok ? 0.0 : max_abs(a, len);
  double mb = b_ok ? 0.0 : max_abs(b, len);
  if (finish_zero_sides(partial, ma, mb)) return;
  if (a_ok) ma = max_abs(a, len);
  if (b_ok) mb = max_abs(b, len);
  const int sa = scale_exponent(ma), sb = scale_exponent(mb);
  const ScaleFactors fa = scale_factors(sa), fb = scale_factors(sb);
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int64_t i = 0; i < len; ++i) {
    const double x = apply_scale(a[i], fa), y = apply_scale(b[i], fb);
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  partial[0] = ab;
  partial[1] = aa;
  partial[2] = bb;
  partial[3] = double(sa);
  partial[4] = double(sb);
}

template <typename T>
void dots_tile_plain(const T* a, const T* b, int64_t n, double* p, bool avx2) {
#if ACCORD_X86_DISPATCH
  // float64 stays portable: it streams at memory speed with SSE2, and FMA would change its bits
  if constexpr (!std::is_same_v<T, double>) {
    if (avx2) return tile_dots_avx2(a, b, n, p);
  }
#endif
  (void)avx2;
  tile_dots(a, b, n, p);
}

// One row of kDotsPartialWidth: the plain sums (exponents 0), or for a float64 tile outside the
// plain range the scaled ones. 16/32-bit squares are exact and far inside float64's range.
template <typename T>
void dots_tile(const T* a, const T* b, int64_t n, double* p, bool avx2) {
  dots_tile_plain(a, b, n, p, avx2);
  p[3] = p[4] = 0.0;
  if constexpr (std::is_same_v<T, double>) {
    if (!plain_dots_ok(p[1], p[2])) tile_dots_scaled(a, b, n, p);
  }
}

}  // namespace

void segment_dots_scaled(DType dtype, const void* a, const void* b, const Layout& layout,
                         ScaledDots* dots) {
  constexpr int64_t W = kDotsPartialWidth;
  std::vector<double> partials(size_t(layout.num_tiles) * W);
  const bool avx2 = vec::isa() == vec::Isa::kAvx2;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t t) {
      dots_tile(pa + r.begin, pb + r.begin, r.end - r.begin, &partials[size_t(t) * W], avx2);
    });
  });
  // per segment: the largest exponents, then the shifted partials in tile order
  for (int64_t l = 0; l < layout.num_segments; ++l) {
    ScaledDots d = empty_scaled_dots();
    const int64_t t0 = layout.tile_start[l], t1 = layout.tile_start[l + 1];
    for (int64_t t = t0; t < t1; ++t) max_exponents(d, &partials[size_t(t) * W]);
    for (int64_t t = t0; t < t1; ++t) add_partial(d, &partials[size_t(t) * W]);
    dots[l] = d;
  }
}

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots) {
  std::vector<ScaledDots> scaled(size_t(layout.num_segments));
  segment_dots_scaled(dtype, a, b, layout, scaled.data());
  for (int64_t l = 0; l < layout.num_segments; ++l) unscaled_dots(scaled[l], dots + 3 * l);
}

}  // namespace accord::cpu
