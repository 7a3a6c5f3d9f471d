#pragma once
// Scalar math of the Adasum pair rule, shared by the CPU and CUDA backends.
#include <cfloat>
#include <cmath>

#include "accord/macros.h"
#include "accord/scaled_dots.h"

namespace accord {

// Separately rounded float64 operations. nvcc contracts `1 - w * q` into one FMA unless told
// not to, which rounds once instead of twice: the coefficient then differs from the CPU's in
// the last bit, and where 1 - w q cancels that bit is a large part of the coefficient. Both
// backends compute the coefficients with exactly these operations (the host build compiles
// with -ffp-contract=off), so CPU and CUDA combine with the same coefficients, bit for bit.
ACCORD_HD double rn_mul(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(x, y);
#else
  return x * y;
#endif
}
ACCORD_HD double rn_sub(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(x, y);
#else
  return x - y;
#endif
}
ACCORD_HD double rn_add(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(x, y);
#else
  return x + y;
#endif
}
ACCORD_HD double rn_div(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(x, y);
#else
  return x / y;
#endif
}

// A squared norm below this counts as zero: its vector gets coefficient 1, so a zero input
// degrades to a plain sum. With dots computed by the kernel (scaled_dots.h) a non-zero vector's
// scaled squared norm is at least 1/4, so only a zero vector is caught; with dots given by the
// caller (plain float64 values) it catches squares that underflowed below DBL_MIN. Horovod uses
// sqrt(DBL_MIN) (~1.5e-154), which treats genuine float64 vectors of norm below ~1e-77 as zero.
constexpr double kZeroNormSq = DBL_MIN;

// out = a * (x 2^ea) + b * (y 2^eb). ea = eb = 0 except where a coefficient is beyond float64's
// range (below).
struct PairCoeffs {
  double a, b;
  int ea = 0, eb = 0;
};

// One coefficient, 1 - w (a.b / |a|^2), from scaled dots: a.b / |a|^2 = (ab / aa) 2^(sb - sa).
// Next to a partner larger by more than ~2^1024 (say |a| ~ 1e-160, |b| ~ 1e155) the coefficient
// itself overflows although every product c * x_i is of the partner's order; it is then kept as
// (2^-d - w ab/aa) 2^d, d = sb - sa, and the exponent is applied to the elements instead.
ACCORD_HD void pair_coeff(double ab, double aa, int sa, int sb, double w, double& c, int& e) {
  e = 0;
  if (aa < kZeroNormSq) {  // written so that a NaN norm fails it and reaches the formula
    c = 1.0;
    return;
  }
  const double r = rn_div(ab, aa);
  c = rn_sub(1.0, rn_mul(w, shift(r, sb - sa)));
  if (!(fabs(c) <= DBL_MAX) && fabs(r) <= DBL_MAX) {
    c = rn_sub(shift(1.0, sa - sb), rn_mul(w, r));
    e = sb - sa;
  }
}

// Weighted Adasum pair rule for one segment (ALGORITHMS.md section 1):
//   out = (1 - wa * a.b / |a|^2) a + (1 - wb * a.b / |b|^2) b,
// with wa = n1 / (n1 + n2), wb = n2 / (n1 + n2) for subtrees of n1 and n2 inputs (wa = wb = 1/2
// is the plain rule). NaN/Inf anywhere in a segment makes the whole output segment NaN (never
// silently finite), which is what loss scalers look for. With unscaled dots (sa = sb = 0) the
// shifts are identities: 1 - w (ab / aa).
ACCORD_HD PairCoeffs adasum_coeffs(const ScaledDots& d, double wa, double wb) {
  PairCoeffs c;
  pair_coeff(d.ab, d.aa, d.sa, d.sb, wa, c.a, c.ea);
  pair_coeff(d.ab, d.bb, d.sb, d.sa, wb, c.b, c.eb);
  return c;
}

ACCORD_HD PairCoeffs adasum_coeffs(double dot, double aa, double bb, double wa, double wb) {
  return adasum_coeffs(ScaledDots{dot, aa, bb, 0, 0}, wa, wb);
}

// A coefficient only grows this large next to a vector much smaller than its partner
// (ca ~ |b| / |a|); the products ca * a_i stay of the data's order, but ca itself may not fit in a
// float. Segments with such coefficients (or with exponents, above) are combined in float64 by
// both backends instead of in float opmath, so a finite input never turns into inf/NaN. (A NaN
// coefficient also takes this path; it stays NaN.)
constexpr double kFloatSafeCoeff = 1e30;

ACCORD_HD bool needs_float64_combine(const PairCoeffs& c) {
  return !(fabs(c.a) <= kFloatSafeCoeff && fabs(c.b) <= kFloatSafeCoeff) || c.ea != 0 ||
         c.eb != 0;
}

// One element of the float64 combine (the wide / scaled path): c.a (x 2^ea) + c.b (y 2^eb),
// separately rounded.
ACCORD_HD double combine_float64(const PairCoeffs& c, double x, double y) {
  return rn_add(rn_mul(c.a, shift(x, c.ea)), rn_mul(c.b, shift(y, c.eb)));
}

}  // namespace accord
