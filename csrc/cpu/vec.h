#pragma once
// Fixed-width vector helpers for the streaming CPU kernels (segment_dots, adasum_combine).
//
// Written with GCC/clang vector extensions: arithmetic on these types is element-wise, never
// reassociated, so a kernel built from them computes the same bits whatever instruction set the
// compiler picks (SSE2, AVX2, NEON...) and whichever ACCORD_CLONES variant runs. The 16-bit
// conversions reproduce dtype.h's scalar ones bit for bit (including NaN payloads, subnormals and
// overflow) with branch-free integer/float lane operations, so they vectorise.
//
// ACCORD_CLONES_* compile a function for several x86-64 levels and pick one at load time (GCC
// function multiversioning through ifunc); elsewhere they expand to nothing. The baseline build
// stays portable x86-64 (no -march): the AVX2 variants are only entered on CPUs that have AVX2.
//   ACCORD_CLONES_FMA   may contract a*b+c into FMA: only for code where that cannot change a
//                       result (float64 products of float32/16-bit values are exact).
//   ACCORD_CLONES       AVX2 without FMA: bit-identical to the baseline variant for any code.
#include <cstdint>
#include <cstring>

#include "accord/dtype.h"

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && \
    defined(__ELF__) && !defined(ACCORD_NO_CLONES)
#define ACCORD_CLONES_FMA __attribute__((target_clones("arch=x86-64-v3", "default")))
#define ACCORD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ACCORD_CLONES_FMA
#define ACCORD_CLONES
#endif

#if defined(__GNUC__)
#define ACCORD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ACCORD_ALWAYS_INLINE inline
#endif

// The helpers are always inlined, so the "vector argument changes the ABI" note is moot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace accord::cpu::vec {

constexpr int kWidth = 8;  // lanes per vector

typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

template <typename V, typename P>
ACCORD_ALWAYS_INLINE V loadu(const P* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename P, typename V>
ACCORD_ALWAYS_INLINE void storeu(P* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename To, typename From>
ACCORD_ALWAYS_INLINE To bitcast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bitcast between different sizes");
  To t;
  std::memcpy(&t, &v, sizeof t);
  return t;
}
// m ? a : b per lane, m a comparison result (all ones / all zeros per lane)
ACCORD_ALWAYS_INLINE u32x8 select(i32x8 m, u32x8 a, u32x8 b) {
  const u32x8 mu = bitcast<u32x8>(m);
  return (mu & a) | (~mu & b);
}

// ---- 8 elements to opmath float (the 32- and 16-bit types) ----------------------------------
ACCORD_ALWAYS_INLINE f32x8 load8(const float* p) { return loadu<f32x8>(p); }

ACCORD_ALWAYS_INLINE f32x8 load8(const bfloat16_t* p) {
  const u32x8 u = __builtin_convertvector(loadu<u16x8>(p), u32x8) << 16;
  return bitcast<f32x8>(u);
}

// = half_to_float: normal, subnormal (exact: man * 2^-24), zero, inf and nan (payload << 13)
ACCORD_ALWAYS_INLINE f32x8 load8(const half_t* p) {
  const u32x8 h = __builtin_convertvector(loadu<u16x8>(p), u32x8);
  const u32x8 sign = (h & 0x8000u) << 16;
  const u32x8 expo = (h >> 10) & 0x1Fu;
  const u32x8 man = h & 0x3FFu;
  const u32x8 normal = sign | ((expo + 112u) << 23) | (man << 13);
  const u32x8 special = sign | 0x7F800000u | (man << 13);
  const f32x8 sub_value = __builtin_convertvector(bitcast<i32x8>(man), f32x8) * 0x1p-24f;
  const u32x8 sub = sign | bitcast<u32x8>(sub_value);
  return bitcast<f32x8>(select(expo == 0x1Fu, special, select(expo == 0u, sub, normal)));
}

// ---- opmath float to 8 stored elements -------------------------------------------------------
ACCORD_ALWAYS_INLINE void store8(float* p, f32x8 v) { storeu(p, v); }

// = float_to_bf16: round to nearest even, nan kept quiet
ACCORD_ALWAYS_INLINE void store8(bfloat16_t* p, f32x8 v) {
  const u32x8 x = bitcast<u32x8>(v);
  const u32x8 rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  const u32x8 nan = (x >> 16) | 0x40u;
  const u32x8 r = select((x & 0x7FFFFFFFu) > 0x7F800000u, nan, rounded);
  storeu(p, __builtin_convertvector(r, u16x8));
}

// = float_to_half: round to nearest even; overflow to inf; subnormal results rounded through
// float arithmetic (|v| * 2^24 + 2^23 rounds to an integer, exactly, for |v| < 2^-14)
ACCORD_ALWAYS_INLINE void store8(half_t* p, f32x8 v) {
  const u32x8 x = bitcast<u32x8>(v);
  const u32x8 sign = (x >> 16) & 0x8000u;
  const u32x8 absx = x & 0x7FFFFFFFu;
  const u32x8 nan_or_inf = 0x7C00u | select(absx > 0x7F800000u, 0x200u | ((absx >> 13) & 0x3FFu),
                                             u32x8{} );
  const u32x8 normal = ((absx + 0x0FFFu + ((absx >> 13) & 1u)) >> 13) - (112u << 10);
  const f32x8 scaled = bitcast<f32x8>(absx) * 0x1p24f + 0x1p23f;
  const u32x8 sub = bitcast<u32x8>(scaled) - 0x4B000000u;
  const u32x8 mag = select(absx >= 0x7F800000u, nan_or_inf,
                           select(absx >= 0x477FF000u, u32x8{} + 0x7C00u,
                                  select(absx < 0x38800000u, sub, normal)));
  storeu(p, __builtin_convertvector(sign | mag, u16x8));
}

// ---- 8 elements widened to float64 (reductions) ----------------------------------------------
ACCORD_ALWAYS_INLINE f64x8 load8_f64(const double* p) { return loadu<f64x8>(p); }
template <typename T>
ACCORD_ALWAYS_INLINE f64x8 load8_f64(const T* p) {
  return __builtin_convertvector(load8(p), f64x8);
}

ACCORD_ALWAYS_INLINE f64x8 load8(const double* p) { return loadu<f64x8>(p); }
ACCORD_ALWAYS_INLINE void store8(double* p, f64x8 v) { storeu(p, v); }

}  // namespace accord::cpu::vec

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
