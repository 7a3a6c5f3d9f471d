#pragma once
// Element types, their float conversions and the one dtype-dispatch helper.
//
// float16 and bfloat16 are stored as raw 16-bit patterns and converted with portable bit
// arithmetic (round to nearest even), so the CPU build needs no F16C/AVX512 and the CUDA build
// shares the exact same rounding: both backends produce identical bits for the same opmath value.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "accord/macros.h"

namespace accord {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

struct half_t { uint16_t bits; };
struct bfloat16_t { uint16_t bits; };

ACCORD_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, sizeof u); return u;
#endif
}
ACCORD_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, sizeof f); return f;
#endif
}

ACCORD_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_float(sign | 0x7F800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_float(sign);
    // subnormal: renormalise
    exp = 1;
    while ((man & 0x400u) == 0) { man <<= 1; --exp; }
    man &= 0x3FFu;
    return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

ACCORD_HD uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u)  // inf or nan (keep nan quiet and non-zero)
    return uint16_t(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u | ((absx >> 13) & 0x3FFu) : 0u));
  if (absx >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to >= 65520: overflow
  if (absx < 0x38800000u) {  // result is subnormal or zero
    if (absx < 0x33000000u) return sign;  // below half of the smallest subnormal
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = ((absx >> 13) - (112u << 10));
  const uint32_t rem = absx & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return uint16_t(sign | r);
}

ACCORD_HD float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

ACCORD_HD uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
  return uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// Elem<T>: storage type T, the type arithmetic runs in (`opmath`, as in PyTorch: float for the
// 16-bit types), and the conversions. Reductions always accumulate in double on top of this.
template <typename T> struct Elem;
template <> struct Elem<float> {
  using opmath = float;
  static ACCORD_HD float load(float v) { return v; }
  static ACCORD_HD float store(float v) { return v; }
};
template <> struct Elem<double> {
  using opmath = double;
  static ACCORD_HD double load(double v) { return v; }
  static ACCORD_HD double store(double v) { return v; }
};
// On the GPU the conversions use the hardware's (one instruction instead of a dozen in the
// streaming loops). Both directions are exact / round-to-nearest-even there as here, so the
// bits are the same; NaN and Inf keep the bit patterns of the functions above (selected
// without a branch: the streaming loops stay straight-line code).
template <> struct Elem<half_t> {
  using opmath = float;
  static ACCORD_HD float load(half_t v) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    const float special = bits_float((uint32_t(v.bits & 0x8000u) << 16) | 0x7F800000u |
                                     (uint32_t(v.bits & 0x3FFu) << 13));
    return (v.bits & 0x7C00u) == 0x7C00u ? special : f;
#else
    return half_to_float(v.bits);
#endif
  }
  static ACCORD_HD half_t store(float v) {
#if defined(__CUDA_ARCH__)
    uint16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));  // also +-Inf and overflow to Inf
    const uint32_t x = float_bits(v);
    const uint16_t nan = uint16_t(((x >> 16) & 0x8000u) | 0x7E00u | ((x >> 13) & 0x3FFu));
    return half_t{v != v ? nan : h};
#else
    return half_t{float_to_half(v)};
#endif
  }
};

template <> struct Elem<bfloat16_t> {
  using opmath = float;
  static ACCORD_HD float load(bfloat16_t v) { return bf16_to_float(v.bits); }
  static ACCORD_HD bfloat16_t store(float v) { return bfloat16_t{float_to_bf16(v)}; }
};

template <typename T> struct TypeTag { using type = T; };

// The one dtype switch: calls f(TypeTag<T>{}) for the storage type of `dtype`.
template <typename F>
decltype(auto) dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return std::forward<F>(f)(TypeTag<float>{});
    case DType::Float64: return std::forward<F>(f)(TypeTag<double>{});
    case DType::Float16: return std::forward<F>(f)(TypeTag<half_t>{});
    case DType::BFloat16: return std::forward<F>(f)(TypeTag<bfloat16_t>{});
  }
  throw std::invalid_argument("accord: unsupported dtype code " + std::to_string(int(dtype)));
}

}  // namespace accord
