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

// out[i] = f(x[i], y[i]) for this thread's elements of [begin, end). Loads of a group are issued
// before its stores, so out may alias x or y (each element is read and written by one thread).
template <typename T, typename F>
__device__ __forceinline__ void map2(const T* x, const T* y, T* out, int64_t begin, int64_t end,
                                     F f) {
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
}

// f(x[i], y[i]) for this thread's elements of [begin, end), in increasing i (a fixed order, so
// per-thread accumulations are deterministic).
template <typename T, typename F>
__device__ __forceinline__ void visit2(const T* __restrict__ x, const T* __restrict__ y,
                                       int64_t begin, int64_t end, F&& f) {
  int64_t i = begin + threadIdx.x;
  for (; i + (kUnroll - 1) * kBlock < end; i += kUnroll * kBlock) {
    T xv[kUnroll], yv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      xv[u] = x[i + u * kBlock];
      yv[u] = y[i + u * kBlock];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) f(xv[u], yv[u]);
  }
  for (; i < end; i += kBlock) f(x[i], y[i]);
}

}  // namespace accord::cuda::detail
