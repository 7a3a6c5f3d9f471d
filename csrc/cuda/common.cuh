#pragma once
// Launch helpers shared by the CUDA kernels (private to csrc/cuda).
//
// Every kernel runs 256-thread blocks over the tiles of a Layout (layout.h): block b handles
// tiles b, b + gridDim.x, ... so any tile count fits in one launch, and within a tile each
// thread visits elements begin + threadIdx.x + j * 256 in increasing j. All indices are int64.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "accord/dtype.h"
#include "accord/layout.h"

namespace accord::cuda::detail {

constexpr int kBlock = 256;    // threads per block, every kernel
constexpr int kUnroll = 8;     // elements in flight per thread in the streaming loops
constexpr int64_t kMaxGrid = 0x7FFFFFFF;  // gridDim.x limit

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Blocks for `work` items (tiles, segments, systems): at least 1, at most the grid limit
// (kernels loop with a grid stride, so a capped grid still covers everything).
inline unsigned grid_for(int64_t work) {
  return unsigned(std::min<int64_t>(std::max<int64_t>(work, 1), kMaxGrid));
}

// Throws on a launch error (bad configuration, no device, a sticky error from earlier work).
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("accord.cuda.") + what + ": kernel launch failed: " +
                             cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

// Rounded multiply / add that nvcc never contracts into an FMA: elementwise results are the
// same bits as the CPU backend's `a * x + b * y` (separately rounded products, then the sum).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Streaming loops over one tile's elements [begin, end) of buffers indexed from their start.
// Elements are taken in groups of V = 16 / sizeof(T) consecutive elements, the groups being
// aligned to multiples of V in index space: thread 0 first takes the head (begin up to the
// first multiple of V), then thread t takes whole groups t, t + 256, ... in turn, the elements
// of a group in increasing order, and the tail (after the last whole group) goes to the thread
// whose turn it is. When every buffer starts 16-byte aligned (cudaMalloc, torch's allocator) a
// whole group is one 16-byte load (and store) per buffer, kVecUnroll groups in flight per
// thread; otherwise the same elements are read one by one in the same order. The order depends
// only on (begin, end), never on addresses: reductions give the same bits for any alignment.
template <typename T>
constexpr int kVec = 16 / int(sizeof(T));
constexpr int kVecUnroll = 4;  // 8 was measured too: no faster dots, slower combines (H200)

template <typename T>
struct alignas(16) Pack {
  T v[kVec<T>];
};

// The kVecUnroll groups g, g + kBlock, ... of x and y, all loads issued before any use.
template <typename T>
__device__ __forceinline__ void load_groups(const Pack<T>* xp, const Pack<T>* yp, int64_t g,
                                            Pack<T> (&xv)[kVecUnroll],
                                            Pack<T> (&yv)[kVecUnroll]) {
#pragma unroll
  for (int u = 0; u < kVecUnroll; ++u) {
    xv[u] = xp[g + u * kBlock];
    yv[u] = yp[g + u * kBlock];
  }
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// [first whole group, end of whole groups) in group numbers, and the head's end / tail's start
// in elements, for the range [begin, end) (see above).
struct Groups {
  int64_t g0, g1, head_end, tail_begin;
};

template <int V>
__device__ __forceinline__ Groups groups_of(int64_t begin, int64_t end) {
  const int64_t g0 = (begin + V - 1) / V;
  const int64_t g1 = end / V;
  if (g1 <= g0) return {0, 0, end, end};  // no whole group: all head
  return {g0, g1, g0 * V, g1 * V};
}

// f(x[i], y[i]) for this thread's elements, in the order above (per-thread accumulations are
// deterministic).
template <typename T, typename F>
__device__ __forceinline__ void visit2(const T* __restrict__ x, const T* __restrict__ y,
                                       int64_t begin, int64_t end, F&& f) {
  constexpr int V = kVec<T>;
  const Groups gr = groups_of<V>(begin, end);
  if (threadIdx.x == 0)
    for (int64_t i = begin; i < gr.head_end; ++i) f(x[i], y[i]);
  int64_t g = gr.g0 + threadIdx.x;
  if (aligned16(x) && aligned16(y)) {
    const Pack<T>* xp = reinterpret_cast<const Pack<T>*>(x);
    const Pack<T>* yp = reinterpret_cast<const Pack<T>*>(y);
    for (; g + (kVecUnroll - 1) * kBlock < gr.g1; g += kVecUnroll * kBlock) {
      Pack<T> xv[kVecUnroll], yv[kVecUnroll];
      load_groups(xp, yp, g, xv, yv);
#pragma unroll
      for (int u = 0; u < kVecUnroll; ++u)
#pragma unroll
        for (int e = 0; e < V; ++e) f(xv[u].v[e], yv[u].v[e]);
    }
    for (; g < gr.g1; g += kBlock) {
      const Pack<T> xv = xp[g], yv = yp[g];
#pragma unroll
      for (int e = 0; e < V; ++e) f(xv.v[e], yv.v[e]);
    }
  } else {
    for (; g < gr.g1; g += kBlock) {
      T xv[V], yv[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        xv[e] = x[g * V + e];
        yv[e] = y[g * V + e];
      }
#pragma unroll
      for (int e = 0; e < V; ++e) f(xv[e], yv[e]);
    }
  }
  if (g == gr.g1)  // the tail, if any, is this thread's turn
    for (int64_t i = gr.tail_begin; i < end; ++i) f(x[i], y[i]);
}

// out[i] = f(x[i], y[i]) for this thread's elements. Each element is read and written by one
// thread, loads before stores, so out may alias x or y.
template <typename T, typename F>
__device__ __forceinline__ void map2(const T* x, const T* y, T* out, int64_t begin, int64_t end,
                                     F f) {
  constexpr int V = kVec<T>;
  if (!(aligned16(x) && aligned16(y) && aligned16(out))) {
    // element-strided across the threads: the best coalescing without 16-byte accesses
    int64_t i = begin + threadIdx.x;
    for (; i + (kUnroll - 1) * kBlock < end; i += kUnroll * kBlock) {
      T xv[kUnroll], yv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        xv[u] = x[i + u * kBlock];
        yv[u] = y[i + u * kBlock];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) out[i + u * kBlock] = f(xv[u], yv[u]);
    }
    for (; i < end; i += kBlock) out[i] = f(x[i], y[i]);
    return;
  }
  const Groups gr = groups_of<V>(begin, end);
  if (threadIdx.x == 0)
    for (int64_t i = begin; i < gr.head_end; ++i) out[i] = f(x[i], y[i]);
  const Pack<T>* xp = reinterpret_cast<const Pack<T>*>(x);
  const Pack<T>* yp = reinterpret_cast<const Pack<T>*>(y);
  Pack<T>* op = reinterpret_cast<Pack<T>*>(out);
  int64_t g = gr.g0 + threadIdx.x;
  for (; g + (kVecUnroll - 1) * kBlock < gr.g1; g += kVecUnroll * kBlock) {
    Pack<T> xv[kVecUnroll], yv[kVecUnroll];
    load_groups(xp, yp, g, xv, yv);
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
#pragma unroll
      for (int e = 0; e < V; ++e) xv[u].v[e] = f(xv[u].v[e], yv[u].v[e]);
      op[g + u * kBlock] = xv[u];
    }
  }
  for (; g < gr.g1; g += kBlock) {
    Pack<T> xv = xp[g];
    const Pack<T> yv = yp[g];
#pragma unroll
    for (int e = 0; e < V; ++e) xv.v[e] = f(xv.v[e], yv.v[e]);
    op[g] = xv;
  }
  if (g == gr.g1)
    for (int64_t i = gr.tail_begin; i < end; ++i) out[i] = f(x[i], y[i]);
}

}  // namespace accord::cuda::detail
