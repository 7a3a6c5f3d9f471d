// Per-segment Gram matrices of k vectors (and their products with one more vector) in one pass.
//
// Each gram tile is walked in blocks of kBlock columns: the block of every vector (and of the
// right-hand side, as row k) is converted to float64 once into a small cache-resident buffer.
// Every pair (i <= j) of rows keeps kLanes float64 lane sums for the whole tile: column c of the
// tile (counted from the tile's start) is accumulated into lane c % kLanes, in increasing c; at
// the end of the tile the lanes are folded pairwise in a fixed order (lane t += lane t + w, for
// w = kLanes/2 .. 1), as in segment_dots. The pairs are walked in 2x2 register tiles (four
// products from four row loads; an odd last row in 2x1 tiles). Partials are kept for the upper
// triangle only.
//
// The portable version keeps the lanes in four-double vector-extension values; the x86 AVX2
// version (chosen at run time) is the same code compiled for AVX2 + FMA. The products
// of float32 or 16-bit values are exact in float64, so FMA changes nothing and both give the
// same bits; float64 inputs always take the portable, FMA-free version.
//
// Why (k = 4..16, 64 MiB-class float32 rows, 2 cores): the former per-block `omp simd reduction`
// kept one accumulator per pair and block and waited on add latency (3.6-6.7x the bandwidth
// bound); lanes carried across the tile and 2x2 tiles remove the latency chain and halve loads.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "accord/kernels.h"
#include "parallel.h"
#include "vec.h"

namespace accord::cpu {
namespace {

// columns converted per block (a multiple of kLanes): the lane accumulators are loaded and stored
// once per block, and 512 float64 columns of k = 16 rows (68 KiB) still sit in L2; 256 was 10-25%
// slower at k = 4..16
constexpr int64_t kBlock = 512;
constexpr int kLanes = 16;
constexpr int kPrefetchBytes = 2048;

typedef double f64x4 __attribute__((vector_size(32)));

// s + x * y; in the AVX2 version the compiler contracts it to an FMA (the default
// -ffp-contract=fast of GNU C++), which is exact there (see above) and only a speed matter.
ACCORD_ALWAYS_INLINE f64x4 madd(f64x4 x, f64x4 y, f64x4 s) { return s + x * y; }

typedef float f32x4 __attribute__((vector_size(16)));

// Converts len elements of src to float64 (vec.h conversions: the bits of Elem<T>::load). Eight
// values are widened as two four-lane halves: a 64-byte f64x8 has no register on AVX2, and GCC
// moves it through the stack and general registers (a third of the kernel's time at k = 4).
template <typename T>
ACCORD_ALWAYS_INLINE void convert_row(const T* src, int64_t len, double* dst) {
  if constexpr (std::is_same_v<T, double>) {
    std::memcpy(dst, src, size_t(len) * sizeof(double));
    return;
  } else {
    int64_t e = 0;
    for (; e + 8 <= len; e += 8) {
      if (e % 16 == 0)
        __builtin_prefetch(reinterpret_cast<const char*>(src + e) + kPrefetchBytes);
      const vec::f32x8 x = vec::load8(src + e);
      f32x4 lo, hi;
      std::memcpy(&lo, &x, sizeof lo);
      std::memcpy(&hi, reinterpret_cast<const char*>(&x) + sizeof lo, sizeof hi);
      vec::storeu(dst + e, __builtin_convertvector(lo, f64x4));
      vec::storeu(dst + e + 4, __builtin_convertvector(hi, f64x4));
    }
    for (; e < len; ++e) dst[e] = double(Elem<T>::load(src[e]));
  }
}

// Adds the products of row y with rows x0 (and x1 when N = 2) over columns [0, full) into the lane
// sums a0 (a1): column c into lane c % kLanes, in increasing c, as in the 2x2 tiles.
template <int N>
ACCORD_ALWAYS_INLINE void column_tile(const double* y, const double* x0, double* a0,
                                      const double* x1, double* a1, int64_t full) {
  for (int q = 0; q < kLanes; q += 8) {
    f64x4 s0[2], s1[2];
    for (int h = 0; h < 2; ++h) {
      s0[h] = vec::loadu<f64x4>(a0 + q + 4 * h);
      if constexpr (N == 2) s1[h] = vec::loadu<f64x4>(a1 + q + 4 * h);
    }
    for (int64_t e = q; e < full; e += kLanes) {
      for (int h = 0; h < 2; ++h) {
        const f64x4 Y = vec::loadu<f64x4>(y + e + 4 * h);
        s0[h] = madd(vec::loadu<f64x4>(x0 + e + 4 * h), Y, s0[h]);
        if constexpr (N == 2) s1[h] = madd(vec::loadu<f64x4>(x1 + e + 4 * h), Y, s1[h]);
      }
    }
    for (int h = 0; h < 2; ++h) {
      vec::storeu(a0 + q + 4 * h, s0[h]);
      if constexpr (N == 2) vec::storeu(a1 + q + 4 * h, s1[h]);
    }
  }
}

// acc: rows*(rows+1)/2 pairs (i <= j, row-major upper triangle) of kLanes doubles each.
template <typename T>
ACCORD_ALWAYS_INLINE void tile_gram_body(const T* v, int64_t k, int64_t n, const T* rhs,
                                         int64_t begin, int64_t end, double* partial,
                                         double* block, double* acc) {
  const int64_t rows = k + (rhs ? 1 : 0);
  const int64_t pairs = k * (k + 1) / 2;
  const int64_t all = rows * (rows + 1) / 2;
  std::fill(acc, acc + all * kLanes, 0.0);
  auto idx = [rows](int64_t i, int64_t j) { return i * rows - i * (i - 1) / 2 + (j - i); };
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int64_t len = std::min(kBlock, end - b0);
    const int64_t full = len / kLanes * kLanes;
    for (int64_t i = 0; i < rows; ++i)
      convert_row(i < k ? v + i * n + b0 : rhs + b0, len, block + i * kBlock);
    // 2x2 tiles of pairs (i, i1) x (j, j1), i <= j; a diagonal tile computes the pair below the
    // diagonal too but does not store it. An odd last row j (rhs with an even k, or an odd k)
    // gets column tiles of (i, i + 1) x j instead, each product computed once.
    for (int64_t i = 0; i < rows; i += 2) {
      const int64_t i1 = std::min(i + 1, rows - 1);
      for (int64_t j = i; j < rows; j += 2) {
        const int64_t j1 = std::min(j + 1, rows - 1);
        if (j1 == j) {
          const double* y = block + j * kBlock;
          if (i1 == i)
            column_tile<1>(y, block + i * kBlock, acc + idx(i, j) * kLanes, nullptr, nullptr, full);
          else
            column_tile<2>(y, block + i * kBlock, acc + idx(i, j) * kLanes, block + i1 * kBlock,
                           acc + idx(i1, j) * kLanes, full);
          continue;
        }
        const double* x0 = block + i * kBlock;
        const double* x1 = block + i1 * kBlock;
        const double* y0 = block + j * kBlock;
        const double* y1 = block + j1 * kBlock;
        double* a00 = acc + idx(i, j) * kLanes;
        double* a01 = acc + idx(i, j1) * kLanes;
        double* a10 = i1 <= j ? acc + idx(i1, j) * kLanes : nullptr;
        double* a11 = acc + idx(i1, j1) * kLanes;
        // lanes q .. q+7 of the four pairs: eight independent FMA chains (covers FMA latency)
        for (int q = 0; q < kLanes; q += 8) {
          f64x4 s00[2], s01[2], s10[2], s11[2];
          for (int h = 0; h < 2; ++h) {
            s00[h] = vec::loadu<f64x4>(a00 + q + 4 * h);
            s01[h] = vec::loadu<f64x4>(a01 + q + 4 * h);
            s10[h] = a10 ? vec::loadu<f64x4>(a10 + q + 4 * h) : f64x4{};
            s11[h] = vec::loadu<f64x4>(a11 + q + 4 * h);
          }
          for (int64_t e = q; e < full; e += kLanes) {
            for (int h = 0; h < 2; ++h) {
              const f64x4 X0 = vec::loadu<f64x4>(x0 + e + 4 * h);
              const f64x4 X1 = vec::loadu<f64x4>(x1 + e + 4 * h);
              const f64x4 Y0 = vec::loadu<f64x4>(y0 + e + 4 * h);
              const f64x4 Y1 = vec::loadu<f64x4>(y1 + e + 4 * h);
              s00[h] = madd(X0, Y0, s00[h]);
              s01[h] = madd(X0, Y1, s01[h]);
              s10[h] = madd(X1, Y0, s10[h]);
              s11[h] = madd(X1, Y1, s11[h]);
            }
          }
          for (int h = 0; h < 2; ++h) {
            if (a10) vec::storeu(a10 + q + 4 * h, s10[h]);
            vec::storeu(a11 + q + 4 * h, s11[h]);
            vec::storeu(a01 + q + 4 * h, s01[h]);
            vec::storeu(a00 + q + 4 * h, s00[h]);
          }
        }
      }
    }
    // the block's last columns (fewer than kLanes; only in a tile's last block): lane e - full
    if (full < len) {
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = i; j < rows; ++j) {
          double* a = acc + idx(i, j) * kLanes;
          const double* x = block + i * kBlock;
          const double* y = block + j * kBlock;
          for (int64_t e = full; e < len; ++e) {
            const double prod = x[e] * y[e];
            a[e - full] += prod;
          }
        }
    }
  }
  int64_t p = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i; j < rows; ++j) {
      double* l = acc + idx(i, j) * kLanes;
      for (int w = kLanes / 2; w >= 1; w /= 2)
        for (int t = 0; t < w; ++t) l[t] += l[t + w];
      partial[j < k ? p++ : pairs + i] = l[0];
    }
}

template <typename T>
void tile_gram(const T* v, int64_t k, int64_t n, const T* rhs, int64_t begin, int64_t end,
               double* partial, double* block, double* acc) {
  tile_gram_body(v, k, n, rhs, begin, end, partial, block, acc);
}

#if ACCORD_X86_DISPATCH

template <typename T>
ACCORD_TARGET_AVX2_FMA void tile_gram_avx2(const T* v, int64_t k, int64_t n, const T* rhs,
                                           int64_t begin, int64_t end, double* partial,
                                           double* block, double* acc) {
  tile_gram_body(v, k, n, rhs, begin, end, partial, block, acc);
}
#endif

}  // namespace

void gram(DType dtype, const void* vectors, int64_t k, const void* rhs, const Layout& layout,
          double* gram, double* rhs_dots) {
  const int64_t pairs = k * (k + 1) / 2;
  const int64_t width = pairs + (rhs ? k : 0);
  const int64_t rows = k + (rhs ? 1 : 0);
  const int64_t n = layout_elements(layout);
  std::vector<double> partials(size_t(layout.num_tiles * width));
  const bool avx2 = vec::isa() == vec::Isa::kAvx2;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* v = static_cast<const T*>(vectors);
    const T* r = static_cast<const T*>(rhs);
    for_each_tile(layout, n * k, [&](TileRange range, int64_t t) {
      // scratch kept per thread: at small sizes an allocation per tile costs as much as the work
      thread_local std::vector<double> block, acc;
      block.resize(std::max(block.size(), size_t(rows * kBlock)));
      acc.resize(std::max(acc.size(), size_t(rows * (rows + 1) / 2 * kLanes)));
      double* out = &partials[size_t(t * width)];
#if ACCORD_X86_DISPATCH
      // float64 stays portable: FMA would change its bits
      if constexpr (!std::is_same_v<T, double>) {
        if (avx2)
          return tile_gram_avx2(v, k, n, r, range.begin, range.end, out, block.data(),
                                acc.data());
      }
#endif
      (void)avx2;
      tile_gram(v, k, n, r, range.begin, range.end, out, block.data(), acc.data());
    });
  });
  std::vector<double> sums(size_t(layout.num_segments * width));
  sum_partials_by_segment(layout, partials, width, sums.data());
  for (int64_t l = 0; l < layout.num_segments; ++l) {
    const double* s = sums.data() + l * width;
    double* g = gram + l * k * k;
    int64_t p = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = i; j < k; ++j, ++p) g[i * k + j] = g[j * k + i] = s[p];
    if (rhs)
      for (int64_t i = 0; i < k; ++i) rhs_dots[l * k + i] = s[pairs + i];
  }
}

}  // namespace accord::cpu
