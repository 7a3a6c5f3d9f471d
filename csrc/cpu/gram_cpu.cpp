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
// The portable version keeps the lanes in four-double vector-extension values. The x86 AVX2
// version (chosen at run time) works on four lanes at a time with larger register tiles: up to
// five rows (k <= 4 with a right-hand side, k <= 5 without) it converts the rows as it loads them
// and keeps every pair's lane sums in registers (tile_gram_registers); with more rows it stages
// them as above and walks groups of four rows: a triangle on the diagonal, 4 x 2 rectangles off it
// (walk_groups_avx2). Each lane's columns are still added in increasing order, and the
// products of float32 or 16-bit values are exact in float64, so FMA changes nothing and every
// version gives the same bits; float64 inputs always take the portable, FMA-free version.
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

// Index of pair (i, j), i <= j < rows, in the lane accumulators (row-major upper triangle).
ACCORD_ALWAYS_INLINE int64_t pair_index(int64_t i, int64_t j, int64_t rows) {
  return i * rows - i * (i - 1) / 2 + (j - i);
}

// Folds each pair's kLanes lane sums pairwise in the fixed order and writes the tile's partials:
// the upper triangle of the k vectors, then the k products with the rhs (row k).
ACCORD_ALWAYS_INLINE void fold_lanes(double* acc, int64_t k, int64_t rows, double* partial) {
  const int64_t pairs = k * (k + 1) / 2;
  int64_t p = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i; j < rows; ++j) {
      double* l = acc + pair_index(i, j, rows) * kLanes;
      for (int w = kLanes / 2; w >= 1; w /= 2)
        for (int t = 0; t < w; ++t) l[t] += l[t + w];
      partial[j < k ? p++ : pairs + i] = l[0];
    }
}

// The staged block's last columns [full, len) (fewer than kLanes; only in a tile's last block):
// column e into lane e - full.
ACCORD_ALWAYS_INLINE void add_staged_tail(const double* block, int64_t rows, double* acc,
                                          int64_t full, int64_t len) {
  if (full == len) return;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = i; j < rows; ++j) {
      double* a = acc + pair_index(i, j, rows) * kLanes;
      const double* x = block + i * kBlock;
      const double* y = block + j * kBlock;
      for (int64_t e = full; e < len; ++e) {
        const double prod = x[e] * y[e];
        a[e - full] += prod;
      }
    }
}

// The pairs of a staged block in 2x2 register tiles (portable version).
ACCORD_ALWAYS_INLINE void walk_pairs_2x2(const double* block, int64_t rows, double* acc,
                                         int64_t full) {
  auto idx = [rows](int64_t i, int64_t j) { return pair_index(i, j, rows); };
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
}

// One tile over staged rows: per block of kBlock columns, Stage converts each row into `block`
// (row i at block + i * kBlock) and Walk adds the products of its full kLanes groups into the
// lane sums acc (rows*(rows+1)/2 pairs, row-major upper triangle, kLanes doubles each).
template <auto Stage, auto Walk, typename T>
ACCORD_ALWAYS_INLINE void staged_tile(const T* v, int64_t k, int64_t n, const T* rhs,
                                      int64_t begin, int64_t end, double* partial, double* block,
                                      double* acc) {
  const int64_t rows = k + (rhs ? 1 : 0);
  std::fill(acc, acc + rows * (rows + 1) / 2 * kLanes, 0.0);
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int64_t len = std::min(kBlock, end - b0);
    const int64_t full = len / kLanes * kLanes;
    for (int64_t i = 0; i < rows; ++i)
      Stage(i < k ? v + i * n + b0 : rhs + b0, len, block + i * kBlock);
    Walk(block, rows, acc, full);
    add_staged_tail(block, rows, acc, full, len);
  }
  fold_lanes(acc, k, rows, partial);
}

template <typename T>
void tile_gram(const T* v, int64_t k, int64_t n, const T* rhs, int64_t begin, int64_t end,
               double* partial, double* block, double* acc) {
  staged_tile<convert_row<T>, walk_pairs_2x2>(v, k, n, rhs, begin, end, partial, block, acc);
}

#if ACCORD_X86_DISPATCH

// ---- AVX2 with the rows in registers (at most kRegisterRows rows) ----------------------------
// With few rows, staging them as float64 costs more than the products: at k = 4, 4096 columns,
// the conversion stores and the reloads of the 2x2 tiles took most of the time. Up to five rows,
// every pair's accumulator fits in a register for four lanes at a time, so each block is walked
// once per group of four lanes (q) with the rows converted as they are loaded (the block is
// still in L1 for the later groups). Each lane still adds its columns in increasing order, so
// the sums are those of the staged version, bit for bit.
constexpr int64_t kRegisterRows = 5;

// Four elements as float64, converted as vec.h's avx2_load8 does.
ACCORD_TARGET_AVX2 ACCORD_ALWAYS_INLINE __m256d load4_f64(const float* p) {
  return _mm256_cvtps_pd(_mm_loadu_ps(p));
}
ACCORD_TARGET_AVX2 ACCORD_ALWAYS_INLINE __m256d load4_f64(const double* p) {
  return _mm256_loadu_pd(p);  // rows already staged as float64
}
ACCORD_TARGET_AVX2 ACCORD_ALWAYS_INLINE __m256d load4_f64(const half_t* p) {
  return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
ACCORD_TARGET_AVX2 ACCORD_ALWAYS_INLINE __m256d load4_f64(const bfloat16_t* p) {
  const __m128i u = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(u, 16)));
}

// convert_row for the AVX2 kernels: four values per instruction (GCC's generic tuning splits
// the portable version's loads and converts two values at a time).
template <typename T>
ACCORD_TARGET_AVX2 void convert_row_avx2(const T* src, int64_t len, double* dst) {
  int64_t e = 0;
  for (; e + 8 <= len; e += 8) {
    if (e % 16 == 0) __builtin_prefetch(reinterpret_cast<const char*>(src + e) + kPrefetchBytes);
    _mm256_storeu_pd(dst + e, load4_f64(src + e));
    _mm256_storeu_pd(dst + e + 4, load4_f64(src + e + 4));
  }
  for (; e < len; ++e) dst[e] = double(Elem<T>::load(src[e]));
}

// Lanes q .. q+3, over columns [0, full), of the pairs (i <= j < R) of rows x[0 .. R) (C = false),
// or of the pairs (i, R) for i <= R, row R against rows 0 .. R (C = true). acc[p]: the lane sums
// of the p-th such pair. At most 14 of the 16 vector registers: no spills in the loop.
template <int R, bool C, typename T>
ACCORD_TARGET_AVX2_FMA ACCORD_ALWAYS_INLINE void register_lanes(const T* const* x,
                                                                double* const* acc, int q,
                                                                int64_t full) {
  constexpr int P = C ? R + 1 : R * (R + 1) / 2;
  constexpr int L = C ? R + 1 : R;
  __m256d s[P];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) s[p] = _mm256_loadu_pd(acc[p] + q);
  for (int64_t e = q; e < full; e += kLanes) {
    __m256d r[L];
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) r[i] = load4_f64(x[i] + e);
    if constexpr (C) {
#pragma GCC unroll 16
      for (int i = 0; i <= R; ++i) s[i] = _mm256_fmadd_pd(r[i], r[R], s[i]);
    } else {
      int p = 0;
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
        for (int j = i; j < R; ++j, ++p) s[p] = _mm256_fmadd_pd(r[i], r[j], s[p]);
    }
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) _mm256_storeu_pd(acc[p] + q, s[p]);
}

// One block of `rows` (= R, at most kRegisterRows) rows: x[i] its first column in row i.
template <int R, typename T>
ACCORD_TARGET_AVX2_FMA void register_block(const T* const* x, double* acc, int64_t full) {
  constexpr int T4 = R < 5 ? R : 4;  // rows in the triangle; a fifth row goes by column
  double* tri[T4 * (T4 + 1) / 2];
  double* col[5];
  int p = 0;
  for (int i = 0; i < T4; ++i)
    for (int j = i; j < T4; ++j) tri[p++] = acc + pair_index(i, j, R) * kLanes;
  for (int i = 0; i < R; ++i) col[i] = acc + pair_index(i, R - 1, R) * kLanes;
  for (int q = 0; q < kLanes; q += 4) {
    register_lanes<T4, false>(x, tri, q, full);
    if constexpr (R == 5) register_lanes<4, true>(x, col, q, full);
  }
}

template <typename T>
ACCORD_TARGET_AVX2_FMA void tile_gram_registers(const T* v, int64_t k, int64_t n, const T* rhs,
                                                int64_t begin, int64_t end, double* partial,
                                                double* acc) {
  const int64_t rows = k + (rhs ? 1 : 0);
  std::fill(acc, acc + rows * (rows + 1) / 2 * kLanes, 0.0);
  const T* x[kRegisterRows];
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int64_t len = std::min(kBlock, end - b0);
    const int64_t full = len / kLanes * kLanes;
    for (int64_t i = 0; i < rows; ++i) x[i] = i < k ? v + i * n + b0 : rhs + b0;
    switch (rows) {
      case 1: register_block<1>(x, acc, full); break;
      case 2: register_block<2>(x, acc, full); break;
      case 3: register_block<3>(x, acc, full); break;
      case 4: register_block<4>(x, acc, full); break;
      default: register_block<5>(x, acc, full); break;
    }
    // the block's last columns (fewer than kLanes; only in a tile's last block): lane e - full
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = i; j < rows; ++j) {
        double* a = acc + pair_index(i, j, rows) * kLanes;
        for (int64_t e = full; e < len; ++e) {
          const double prod = double(Elem<T>::load(x[i][e])) * double(Elem<T>::load(x[j][e]));
          a[e - full] += prod;
        }
      }
  }
  fold_lanes(acc, k, rows, partial);
}

// ---- AVX2 over staged rows (more than kRegisterRows rows) ------------------------------------
// The rows are staged as float64 (converted once per block, as in the portable version) and the
// pairs are walked in register tiles four lanes at a time: a triangle of four rows on the
// diagonal (10 pairs from 4 loads) and 4 x 2 rectangles off it (8 pairs from 6 loads), against 4
// pairs from 4 loads in the 2x2 tiles (docs/kernels.md has the figures). Each lane still adds its
// columns in increasing order: the same bits.

// Lanes q .. q+3 of the 4 x GJ pairs (x[a], y[b]), a < 4, b < GJ; acc[a * GJ + b] their sums.
template <int GJ>
ACCORD_TARGET_AVX2_FMA ACCORD_ALWAYS_INLINE void rectangle_lanes(const double* const* x,
                                                                 const double* const* y,
                                                                 double* const* acc, int q,
                                                                 int64_t full) {
  __m256d s[4 * GJ];
#pragma GCC unroll 8
  for (int p = 0; p < 4 * GJ; ++p) s[p] = _mm256_loadu_pd(acc[p] + q);
  for (int64_t e = q; e < full; e += kLanes) {
    __m256d X[4], Y[GJ];
    // the empty asm pins each row in a register: GCC otherwise folds the loads of X into the
    // FMAs, loading each twice (10 loads per 8 FMAs instead of 6)
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) {
      X[a] = _mm256_loadu_pd(x[a] + e);
      asm("" : "+x"(X[a]));
    }
#pragma GCC unroll 2
    for (int b = 0; b < GJ; ++b) Y[b] = _mm256_loadu_pd(y[b] + e);
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a)
#pragma GCC unroll 2
      for (int b = 0; b < GJ; ++b) s[a * GJ + b] = _mm256_fmadd_pd(X[a], Y[b], s[a * GJ + b]);
  }
#pragma GCC unroll 8
  for (int p = 0; p < 4 * GJ; ++p) _mm256_storeu_pd(acc[p] + q, s[p]);
}

// The triangle of rows i0 .. i0 + G - 1 of a staged block, all lanes.
template <int G>
ACCORD_TARGET_AVX2_FMA void staged_triangle(const double* block, int64_t i0, int64_t rows,
                                            double* acc, int64_t full) {
  const double* x[G];
  double* a[G * (G + 1) / 2];
  int p = 0;
  for (int i = 0; i < G; ++i) {
    x[i] = block + (i0 + i) * kBlock;
    for (int j = i; j < G; ++j) a[p++] = acc + pair_index(i0 + i, i0 + j, rows) * kLanes;
  }
  for (int q = 0; q < kLanes; q += 4) register_lanes<G, false>(x, a, q, full);
}

// The pairs of rows i0 .. i0 + 3 with rows j0 .. j0 + GJ - 1 (j0 > i0 + 3) of a staged block.
template <int GJ>
ACCORD_TARGET_AVX2_FMA void staged_rectangle(const double* block, int64_t i0, int64_t j0,
                                             int64_t rows, double* acc, int64_t full) {
  const double* x[4];
  const double* y[GJ];
  double* a[4 * GJ];
  for (int b = 0; b < GJ; ++b) y[b] = block + (j0 + b) * kBlock;
  for (int i = 0; i < 4; ++i) {
    x[i] = block + (i0 + i) * kBlock;
    for (int b = 0; b < GJ; ++b) a[i * GJ + b] = acc + pair_index(i0 + i, j0 + b, rows) * kLanes;
  }
  for (int q = 0; q < kLanes; q += 4) rectangle_lanes<GJ>(x, y, a, q, full);
}

// The pairs of a staged block in groups of four rows: the group's triangle, then its pairs with
// the later rows.
ACCORD_TARGET_AVX2_FMA void walk_groups_avx2(const double* block, int64_t rows, double* acc,
                                             int64_t full) {
  for (int64_t i0 = 0; i0 < rows; i0 += 4) {
    switch (std::min<int64_t>(4, rows - i0)) {
      case 1: staged_triangle<1>(block, i0, rows, acc, full); break;
      case 2: staged_triangle<2>(block, i0, rows, acc, full); break;
      case 3: staged_triangle<3>(block, i0, rows, acc, full); break;
      default: staged_triangle<4>(block, i0, rows, acc, full); break;
    }
    for (int64_t j0 = i0 + 4; j0 < rows; j0 += 2) {
      if (j0 + 1 < rows)
        staged_rectangle<2>(block, i0, j0, rows, acc, full);
      else
        staged_rectangle<1>(block, i0, j0, rows, acc, full);
    }
  }
}

template <typename T>
ACCORD_TARGET_AVX2_FMA void tile_gram_avx2(const T* v, int64_t k, int64_t n, const T* rhs,
                                           int64_t begin, int64_t end, double* partial,
                                           double* block, double* acc) {
  if (k + (rhs ? 1 : 0) <= kRegisterRows)
    return tile_gram_registers(v, k, n, rhs, begin, end, partial, acc);
  staged_tile<convert_row_avx2<T>, walk_groups_avx2>(v, k, n, rhs, begin, end, partial, block,
                                                     acc);
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
