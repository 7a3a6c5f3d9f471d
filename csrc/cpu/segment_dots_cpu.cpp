// Per-segment a.b, a.a and b.b in one pass, accumulated in float64.
//
// Within a tile, element i is accumulated into lane i % kLanes (in increasing i), the kLanes lane
// sums are then folded pairwise in a fixed order (lane j += lane j + w, w = kLanes/2 .. 1). The
// lanes are explicit (vec.h), so the partial does not depend on the instruction set, and kLanes
// independent accumulators per product keep the loop from waiting on add latency: one serial
// float64 accumulator (what `omp simd reduction` gave on baseline x86-64) ran at ~10 GB/s per
// pass, far below memory bandwidth.
#include <vector>

#include "accord/kernels.h"
#include "parallel.h"
#include "vec.h"

namespace accord::cpu {
namespace {

constexpr int kLanes = vec::kWidth;

// kLanes consecutive elements as opmath values: a plain pointer for float32/float64, a converted
// copy (vec.h, vectorised) for the 16-bit types.
template <typename T>
struct Block {
  using M = typename Elem<T>::opmath;
  M buf[kLanes];
  ACCORD_ALWAYS_INLINE const M* load(const T* p) {
    vec::storeu(buf, vec::load8(p));
    return buf;
  }
};
template <>
struct Block<float> {
  ACCORD_ALWAYS_INLINE const float* load(const float* p) { return p; }
};
template <>
struct Block<double> {
  ACCORD_ALWAYS_INLINE const double* load(const double* p) { return p; }
};

template <typename T>
ACCORD_ALWAYS_INLINE void tile_dots(const T* a, const T* b, int64_t len, double* partial) {
  // Lane arrays written as scalar code: the compiler keeps them in registers at whatever vector
  // width the target has, and no reassociation is allowed, so every width gives the same bits.
  double lab[kLanes] = {}, laa[kLanes] = {}, lbb[kLanes] = {};
  Block<T> ba, bb;
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    const auto* x = ba.load(a + i);
    const auto* y = bb.load(b + i);
    for (int j = 0; j < kLanes; ++j) {
      const double xj = double(x[j]), yj = double(y[j]);
      lab[j] += xj * yj;
      laa[j] += xj * xj;
      lbb[j] += yj * yj;
    }
  }
  for (int j = 0; i + j < len; ++j) {  // tail: element i + j goes to lane j
    const double x = double(Elem<T>::load(a[i + j]));
    const double y = double(Elem<T>::load(b[i + j]));
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

// One multiversioned entry per storage type (target_clones does not mix with templates).
// Products of float32/16-bit values are exact in float64, so FMA contraction cannot change a
// bit there; float64 inputs get no FMA variant.
ACCORD_CLONES_FMA void dots_f32(const float* a, const float* b, int64_t n, double* p) {
  tile_dots(a, b, n, p);
}
ACCORD_CLONES_FMA void dots_f16(const half_t* a, const half_t* b, int64_t n, double* p) {
  tile_dots(a, b, n, p);
}
ACCORD_CLONES_FMA void dots_bf16(const bfloat16_t* a, const bfloat16_t* b, int64_t n, double* p) {
  tile_dots(a, b, n, p);
}
ACCORD_CLONES void dots_f64(const double* a, const double* b, int64_t n, double* p) {
  tile_dots(a, b, n, p);
}

void dots_tile(const float* a, const float* b, int64_t n, double* p) { dots_f32(a, b, n, p); }
void dots_tile(const double* a, const double* b, int64_t n, double* p) { dots_f64(a, b, n, p); }
void dots_tile(const half_t* a, const half_t* b, int64_t n, double* p) { dots_f16(a, b, n, p); }
void dots_tile(const bfloat16_t* a, const bfloat16_t* b, int64_t n, double* p) {
  dots_bf16(a, b, n, p);
}

}  // namespace

void segment_dots(DType dtype, const void* a, const void* b, const Layout& layout, double* dots) {
  std::vector<double> partials(size_t(layout.num_tiles) * 3);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    for_each_tile(layout, layout_elements(layout), [&](TileRange r, int64_t t) {
      dots_tile(pa + r.begin, pb + r.begin, r.end - r.begin, &partials[size_t(t) * 3]);
    });
  });
  sum_partials_by_segment(layout, partials, 3, dots);
}

}  // namespace accord::cpu
