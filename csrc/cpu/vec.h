#pragma once
// Fixed-width vector helpers for the streaming CPU kernels (segment_dots, adasum_combine).
//
// Written with GCC/clang vector extensions: arithmetic on these types is element-wise, never
// reassociated, so a kernel built from them computes the same bits whatever instruction set the
// compiler picks (SSE2, NEON...). The 16-bit conversions reproduce dtype.h's scalar ones bit for
// bit (NaN payloads, subnormals, overflow; checked for every 16-bit pattern and every float)
// with branch-free integer/float lane operations, so they vectorise.
//
// On x86-64 (GCC/clang) the kernels also carry AVX2 variants (ACCORD_TARGET_AVX2*, intrinsics
// below) chosen at run time with isa(); the build itself stays baseline x86-64 (no -march), so
// the module loads on any x86-64 CPU. The AVX2 variants produce the same bits as the portable
// code (see each kernel for why), with one exception no C++ code controls: when both operands
// of an x86 operation are NaN the first one's payload wins, and the compiler picks the operand
// order of commutative operations. A NaN stays a NaN everywhere; only its payload may differ.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "accord/dtype.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && \
    !defined(ACCORD_NO_X86_DISPATCH)
#define ACCORD_X86_DISPATCH 1
#include <immintrin.h>
// FMA only where contraction cannot change a result (exact float64 products of float32/16-bit
// values); the elementwise kernels use the variant without it.
#define ACCORD_TARGET_AVX2_FMA __attribute__((target("avx2,fma,f16c")))
#define ACCORD_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#else
#define ACCORD_X86_DISPATCH 0
#endif

#if defined(__GNUC__)
#define ACCORD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ACCORD_ALWAYS_INLINE inline
#endif

// The helpers are always inlined, so GCC's "vector argument changes the ABI" note is moot; it
// stays off for the kernel files that include this (private) header.
#if defined(__GNUC__) && !defined(__clang__)
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

// ---- float64 (its own opmath) ---------------------------------------------------------------
ACCORD_ALWAYS_INLINE f64x8 load8(const double* p) { return loadu<f64x8>(p); }
ACCORD_ALWAYS_INLINE void store8(double* p, f64x8 v) { storeu(p, v); }

#if ACCORD_X86_DISPATCH
// 8 elements as float, as dtype.h converts them, except that F16C returns signalling-NaN halves
// quieted (half_to_float keeps them signalling). Arithmetic and float64 widening quiet them
// anyway; only which payload a NaN result carries can differ (see the top of this file). Clearing
// the quiet bit again would cost ~50% of segment_dots' float16 throughput. bf16 is a shift.
#define ACCORD_AVX2_INLINE ACCORD_TARGET_AVX2 ACCORD_ALWAYS_INLINE
ACCORD_AVX2_INLINE __m256 avx2_load8(const float* p) { return _mm256_loadu_ps(p); }
ACCORD_AVX2_INLINE __m256 avx2_load8(const half_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
ACCORD_AVX2_INLINE __m256 avx2_load8(const bfloat16_t* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
// F16C rounds to nearest even exactly like float_to_half (checked for all 2^32 floats)
ACCORD_AVX2_INLINE void avx2_store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
ACCORD_AVX2_INLINE void avx2_store8(half_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
ACCORD_AVX2_INLINE void avx2_store8(bfloat16_t* p, __m256 v) {
  store8(p, bitcast<f32x8>(v));  // the portable lane code, compiled here with AVX2
}
#undef ACCORD_AVX2_INLINE
#endif

// The instruction set the kernels use. Both levels compute the same bits (see the top of this
// file and each kernel), so the choice is about speed only; tests force each level (set_isa) and
// compare. ACCORD_CPU_ISA=portable caps the automatic choice. (An AVX-512 level was measured and
// left out: the streaming kernels are memory-bound with AVX2 already, see docs/kernels.md.)
enum class Isa : int { kPortable = 0, kAvx2 = 1 };

inline const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "portable"; }

// The best level this CPU (and build) supports.
inline Isa supported_isa() {
#if ACCORD_X86_DISPATCH
  static const Isa best = [] {
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    return avx2 ? Isa::kAvx2 : Isa::kPortable;
  }();
  return best;
#else
  return Isa::kPortable;
#endif
}

inline std::atomic<int>& isa_setting() {
  static std::atomic<int> level{[] {
    const Isa best = supported_isa();
    const char* env = std::getenv("ACCORD_CPU_ISA");
    if (env == nullptr) return int(best);
    for (Isa cap : {Isa::kPortable, Isa::kAvx2})
      if (std::strcmp(env, isa_name(cap)) == 0) return int(cap < best ? cap : best);
    return int(best);  // unknown names: accord's import raises (python/accord/_kernels.py)
  }()};
  return level;
}

inline Isa isa() { return Isa(isa_setting().load(std::memory_order_relaxed)); }

// Selects `level` if the CPU supports it; returns whether it did.
inline bool set_isa(Isa level) {
  if (int(level) > int(supported_isa())) return false;
  isa_setting().store(int(level), std::memory_order_relaxed);
  return true;
}

}  // namespace accord::cpu::vec
