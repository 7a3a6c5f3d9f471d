// Per-segment Gram matrices of k vectors (and their products with one more vector) in one pass.
//
// Each gram tile is walked in blocks of kBlock columns: the block of every vector is converted to
// float64 once into a small cache-resident buffer, then all k(k+1)/2 pair products (plus k with
// the right-hand side) are taken from it. Partials are kept for the upper triangle only.
#include <algorithm>
#include <vector>

#include "accord/kernels.h"
#include "parallel.h"

namespace accord::cpu {
namespace {

constexpr int64_t kBlock = 256;

template <typename T>
void tile_gram(const T* v, int64_t k, int64_t n, const T* rhs, int64_t begin, int64_t end,
               double* partial) {
  const int64_t pairs = k * (k + 1) / 2;
  const int64_t rows = k + (rhs ? 1 : 0);
  std::vector<double> block(size_t(rows * kBlock));
  std::fill(partial, partial + pairs + (rhs ? k : 0), 0.0);
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int64_t len = std::min(kBlock, end - b0);
    for (int64_t i = 0; i < rows; ++i) {
      const T* src = i < k ? v + i * n + b0 : rhs + b0;
      double* dst = block.data() + i * kBlock;
#pragma omp simd
      for (int64_t e = 0; e < len; ++e) dst[e] = double(Elem<T>::load(src[e]));
    }
    int64_t p = 0;
    for (int64_t i = 0; i < k; ++i) {
      const double* x = block.data() + i * kBlock;
      // rows i..k-1 give the upper triangle; row k (when present) is the rhs, stored after it
      for (int64_t j = i; j < rows; ++j) {
        const double* y = block.data() + j * kBlock;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t e = 0; e < len; ++e) s += x[e] * y[e];
        partial[j < k ? p++ : pairs + i] += s;
      }
    }
  }
}

}  // namespace

void gram(DType dtype, const void* vectors, int64_t k, const void* rhs, const Layout& layout,
          double* gram, double* rhs_dots) {
  const int64_t pairs = k * (k + 1) / 2;
  const int64_t width = pairs + (rhs ? k : 0);
  const int64_t n = layout_elements(layout);
  std::vector<double> partials(size_t(layout.num_tiles * width));
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* v = static_cast<const T*>(vectors);
    const T* r = static_cast<const T*>(rhs);
    for_each_tile(layout, n * k, [&](TileRange range, int64_t t) {
      tile_gram(v, k, n, r, range.begin, range.end, &partials[size_t(t * width)]);
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
