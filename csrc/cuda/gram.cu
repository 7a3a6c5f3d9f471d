// Per-segment Gram matrices of k vectors (and their products with a right-hand side) in one pass.
//
// Rows: the k vectors, plus the rhs as row k when given (rows = k or k + 1). One block per tile;
// the tile is walked in chunks of S columns that are converted to float64 once into shared
// memory (rows padded to a multiple of B with zeros, row stride S + 1 against bank conflicts).
// The upper triangle of the rows x rows product is cut into B x B register blocks (I <= J);
// each block pair is owned by E = 2^m threads ("lanes") that split the chunk's columns, every
// lane accumulating its B x B products in float64 registers. At the end of the tile the E lane
// sums are combined by a fixed shuffle tree (and, past one warp, in warp order), and the tile's
// partials, upper triangle then rhs products exactly as on the CPU, go to the workspace.
// partials.cuh then sums them per segment in a fixed order.
//
// B = 2 for rows <= 2, 4 for rows <= 88 (at most 253 block pairs), 8 for rows <= 176; beyond
// that a slow but general kernel takes one block reduction per product (correctness only).
#include <cub/block/block_reduce.cuh>

#include "accord/kernels.h"
#include "common.cuh"
#include "partials.cuh"

namespace accord::cuda {
namespace detail {
namespace {

constexpr int kWarp = 32;
constexpr int64_t kStageBytes = 44032;  // dynamic shared memory budget for the staged chunk

struct GramShape {
  int64_t k;           // vectors
  int64_t rows;        // k (+1 with rhs)
  int nb;              // row blocks: ceil(rows / B)
  int np;              // block pairs: nb (nb + 1) / 2, <= kBlock
  int lanes_log2;      // E = 2^lanes_log2 lanes per block pair
  int chunk_log2;      // S = 2^chunk_log2 columns per staged chunk
  int64_t pairs;       // k (k + 1) / 2
  int64_t width;       // partials per tile: pairs (+ k with rhs)
};

// Index of product (i, j), i <= j < rows, i < k, in a tile's partial row (CPU order).
__device__ __forceinline__ int64_t product_index(int64_t i, int64_t j, int64_t k, int64_t pairs) {
  return j < k ? i * k - i * (i - 1) / 2 + (j - i) : pairs + i;
}

// Register budget: B = 8 needs the whole file (1 block/SM); B <= 4 is held to 3 blocks/SM.
template <int B>
constexpr int gram_min_blocks() { return B >= 8 ? 1 : 3; }

template <typename T, int B>
__global__ void __launch_bounds__(kBlock, gram_min_blocks<B>())
    gram_tiles_kernel(const T* __restrict__ v, const T* __restrict__ rhs, Layout layout,
                      GramShape shape, double* __restrict__ partials) {
  extern __shared__ double stage[];                    // [nb * B][S + 1]
  __shared__ double warp_sums[kBlock / kWarp][B * B];  // lane combination past one warp
  const int64_t n = layout.offsets[layout.num_segments];
  const int64_t k = shape.k;
  const int S = 1 << shape.chunk_log2;
  const int ld = S + 1;
  const int srows = shape.nb * B;
  const int E = 1 << shape.lanes_log2;
  const int bp = threadIdx.x >> shape.lanes_log2;
  const int lane = threadIdx.x & (E - 1);
  const bool active = bp < shape.np;
  int I = 0, J = 0;  // block pair bp, row-major over the upper triangle of nb x nb blocks
  if (active) {
    int rem = bp;
    while (rem >= shape.nb - I) rem -= shape.nb - I++;
    J = I + rem;
  }
  const double* xa = stage + I * B * ld;
  const double* xb = stage + J * B * ld;

  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    double acc[B][B];
#pragma unroll
    for (int u = 0; u < B; ++u)
#pragma unroll
      for (int w = 0; w < B; ++w) acc[u][w] = 0.0;

    for (int64_t c0 = r.begin; c0 < r.end; c0 += S) {
      const int len = int(r.end - c0 < S ? r.end - c0 : S);
      __syncthreads();  // the previous chunk (or tile) is done with the stage
      for (int f = threadIdx.x; f < srows * S; f += kBlock) {
        const int row = f >> shape.chunk_log2;
        const int e = f & (S - 1);
        if (e < len) {
          double val = 0.0;
          if (row < shape.rows) {
            const T* src = row < k ? v + row * n : rhs;
            val = double(Elem<T>::load(src[c0 + e]));
          }
          stage[row * ld + e] = val;
        }
      }
      __syncthreads();
      if (active) {
        for (int e = lane; e < len; e += E) {
          double x[B], y[B];
#pragma unroll
          for (int u = 0; u < B; ++u) x[u] = xa[u * ld + e];
#pragma unroll
          for (int w = 0; w < B; ++w) y[w] = xb[w * ld + e];
#pragma unroll
          for (int u = 0; u < B; ++u)
#pragma unroll
            for (int w = 0; w < B; ++w) acc[u][w] = fma(x[u], y[w], acc[u][w]);
        }
      }
    }

    // Combine the E lanes of each block pair (fixed order: shuffle tree, then warp order).
    const int width = E < kWarp ? E : kWarp;
    for (int off = width / 2; off > 0; off /= 2)
#pragma unroll
      for (int u = 0; u < B; ++u)
#pragma unroll
        for (int w = 0; w < B; ++w)
          acc[u][w] += __shfl_down_sync(0xFFFFFFFFu, acc[u][w], off, width);
    if (E > kWarp) {
      const int warp = threadIdx.x / kWarp;
      if ((threadIdx.x & (kWarp - 1)) == 0)
#pragma unroll
        for (int u = 0; u < B; ++u)
#pragma unroll
          for (int w = 0; w < B; ++w) warp_sums[warp][u * B + w] = acc[u][w];
      __syncthreads();
      if (lane == 0) {
#pragma unroll
        for (int u = 0; u < B; ++u)
#pragma unroll
          for (int w = 0; w < B; ++w) {
            double s = 0.0;
            for (int q = 0; q < E / kWarp; ++q) s += warp_sums[warp + q][u * B + w];
            acc[u][w] = s;
          }
      }
    }

    if (active && lane == 0) {
      // here rows <= 176, so int indices: product (i, j) is tri_i + j for j < k, pairs + i for
      // the rhs (j == k); i == k is rhs.rhs, not wanted
      double* p = partials + t * shape.width;
      const int kk = int(k), rows = int(shape.rows), pairs = int(shape.pairs);
#pragma unroll
      for (int u = 0; u < B; ++u) {
        const int i = I * B + u;
        const int tri = i * kk - i * (i + 1) / 2;  // index of (i, i) is tri + i
#pragma unroll
        for (int w = 0; w < B; ++w) {
          const int j = J * B + w;
          if (i <= j && j < rows && i < kk) p[j < kk ? tri + j : pairs + i] = acc[u][w];
        }
      }
    }
    __syncthreads();  // warp_sums and the stage are reused by the next tile
  }
}

// Any k: one block reduction per product (used only past 176 rows; correctness, not speed).
template <typename T>
__global__ void __launch_bounds__(kBlock)
    gram_tiles_generic_kernel(const T* __restrict__ v, const T* __restrict__ rhs, Layout layout,
                              GramShape shape, double* __restrict__ partials) {
  using Reduce = cub::BlockReduce<double, kBlock>;
  __shared__ typename Reduce::TempStorage temp;
  const int64_t n = layout.offsets[layout.num_segments];
  const int64_t k = shape.k;
  for (int64_t t = blockIdx.x; t < layout.num_tiles; t += gridDim.x) {
    const TileRange r = tile_range(layout, t);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = i; j < shape.rows; ++j) {
        const T* x = v + i * n;
        const T* y = j < k ? v + j * n : rhs;
        double s = 0.0;
        visit2(x, y, r.begin, r.end, [&](T xs, T ys) {
          s += double(Elem<T>::load(xs)) * double(Elem<T>::load(ys));
        });
        s = Reduce(temp).Sum(s);
        if (threadIdx.x == 0) partials[t * shape.width + product_index(i, j, k, shape.pairs)] = s;
        __syncthreads();  // temp is reused
      }
    }
  }
}

struct GramWriter {
  double* gram;
  double* rhs_dots;
  int64_t k, pairs;
  __device__ __forceinline__ void operator()(int64_t l, int64_t c, double value) const {
    if (c < pairs) {
      int64_t i = 0;
      while (c >= k - i) c -= k - i++;
      const int64_t j = i + c;
      double* g = gram + l * k * k;
      g[i * k + j] = value;
      g[j * k + i] = value;
    } else {
      rhs_dots[l * k + (c - pairs)] = value;
    }
  }
};

template <int B>
GramShape make_shape(int64_t k, int64_t rows) {
  GramShape s;
  s.k = k;
  s.rows = rows;
  s.nb = int((rows + B - 1) / B);
  s.np = s.nb * (s.nb + 1) / 2;
  s.lanes_log2 = 0;
  while ((s.np << (s.lanes_log2 + 1)) <= kBlock) ++s.lanes_log2;
  s.chunk_log2 = 10;  // S = 1024 down to 16 while the stage exceeds its budget
  while (s.chunk_log2 > 4 &&
         int64_t(s.nb) * B * ((1 << s.chunk_log2) + 1) * int64_t(sizeof(double)) > kStageBytes)
    --s.chunk_log2;
  s.pairs = k * (k + 1) / 2;
  return s;
}

template <typename T, int B>
void launch_gram_tiles(const T* v, const T* rhs, const Layout& layout, int64_t k, int64_t rows,
                       int64_t width, double* partials, cudaStream_t stream) {
  GramShape shape = make_shape<B>(k, rows);
  shape.width = width;
  const size_t stage_bytes =
      size_t(shape.nb) * B * ((size_t(1) << shape.chunk_log2) + 1) * sizeof(double);
  gram_tiles_kernel<T, B><<<grid_for(layout.num_tiles), kBlock, stage_bytes, stream>>>(
      v, rhs, layout, shape, partials);
}

}  // namespace
}  // namespace detail

int64_t gram_workspace_bytes(const Layout& layout, int64_t k, bool with_rhs) {
  const int64_t width = k * (k + 1) / 2 + (with_rhs ? k : 0);
  return layout.num_tiles * width * int64_t(sizeof(double));
}

void gram(DType dtype, const void* vectors, int64_t k, const void* rhs, const Layout& layout,
          double* gram, double* rhs_dots, void* workspace, void* stream) {
  using namespace detail;
  if (layout.num_segments == 0 || k <= 0) return;
  const cudaStream_t s = as_stream(stream);
  const int64_t pairs = k * (k + 1) / 2;
  const int64_t width = pairs + (rhs ? k : 0);
  double* partials = static_cast<double*>(workspace);
  if (layout.num_tiles > 0) {
    const int64_t rows = k + (rhs ? 1 : 0);
    dispatch_dtype(dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* pv = static_cast<const T*>(vectors);
      const T* pr = static_cast<const T*>(rhs);
      if (rows <= 2) {
        launch_gram_tiles<T, 2>(pv, pr, layout, k, rows, width, partials, s);
      } else if (rows <= 88) {
        launch_gram_tiles<T, 4>(pv, pr, layout, k, rows, width, partials, s);
      } else if (rows <= 176) {
        launch_gram_tiles<T, 8>(pv, pr, layout, k, rows, width, partials, s);
      } else {
        GramShape shape{};
        shape.k = k;
        shape.pairs = pairs;
        shape.width = width;
        shape.rows = rows;
        gram_tiles_generic_kernel<T><<<grid_for(layout.num_tiles), kBlock, 0, s>>>(
            pv, pr, layout, shape, partials);
      }
    });
    check_launch("gram");
  }
  sum_partials(partials, width, layout, GramWriter{gram, rhs_dots, k, pairs}, s, "gram");
}

}  // namespace accord::cuda
