#pragma once
// Scalar math of the Adasum pair rule, shared by the CPU and CUDA backends.
#include <cfloat>
#include <cmath>

#include "accord/macros.h"

namespace accord {

// A squared norm below this counts as zero: its vector gets coefficient 1, so a zero input
// degrades to a plain sum. Horovod uses sqrt(DBL_MIN) (~1.5e-154), which also treats genuine
// float64 vectors of norm below ~1e-77 as zero; accord only gives up where the float64 square
// itself has underflowed to zero or lost precision (subnormal).
constexpr double kZeroNormSq = DBL_MIN;

struct PairCoeffs { double a, b; };

// Weighted Adasum pair rule for one segment (ALGORITHMS.md section 1):
//   out = (1 - wa * a.b / |a|^2) a + (1 - wb * a.b / |b|^2) b,
// with wa = n1 / (n1 + n2), wb = n2 / (n1 + n2) for subtrees of n1 and n2 inputs (wa = wb = 1/2
// is the plain rule). The guard is written `x < kZeroNormSq` so a NaN norm fails it and the NaN
// reaches both coefficients: NaN/Inf anywhere in a segment makes the whole output segment NaN
// (never silently finite), which is what loss scalers look for.
ACCORD_HD PairCoeffs adasum_coeffs(double dot, double aa, double bb, double wa, double wb) {
  PairCoeffs c;
  c.a = aa < kZeroNormSq ? 1.0 : 1.0 - wa * (dot / aa);
  c.b = bb < kZeroNormSq ? 1.0 : 1.0 - wb * (dot / bb);
  return c;
}

// A coefficient only grows this large next to a vector much smaller than its partner
// (ca ~ |b| / |a|); the products ca * a_i stay of the data's order, but ca itself may not fit in a
// float. Segments with such coefficients are combined in float64 by both backends instead of in
// float opmath, so a finite input never turns into inf/NaN. (A NaN coefficient also takes this
// path; it stays NaN.)
constexpr double kFloatSafeCoeff = 1e30;

ACCORD_HD bool needs_float64_combine(const PairCoeffs& c) {
  return !(fabs(c.a) <= kFloatSafeCoeff && fabs(c.b) <= kFloatSafeCoeff);
}

}  // namespace accord
