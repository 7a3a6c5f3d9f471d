#pragma once
// (a.b, a.a, b.b) that stay finite for every finite float64 input, shared by both backends.
//
// The dots accumulate in float64. For float64 inputs the squares can overflow (|x| > ~1.3e154
// gives x*x = inf) or underflow (|x| < ~1.5e-154 gives subnormal or zero squares), so a plain
// sum may be inf, NaN (inf - inf in a.b) or lose the whole segment to zero. Each reduction tile
// therefore produces a *scaled* partial
//
//     (ab, aa, bb, sa, sb)  meaning  a.b = ab 2^(sa+sb),  a.a = aa 2^(2 sa),  b.b = bb 2^(2 sb).
//
// Plain path (every tile of ordinary data, every tile of a 16/32-bit dtype): the tile's float64
// sums with sa = sb = 0, kept when both squared norms lie in [kPlainDotsMin, kPlainDotsMax].
// That range leaves room to add 2^400 such tiles without overflow, and keeps the absolute error
// of underflowed products (at most 2^-1075 each) below 2^-150 relative to the norms.
// Zero sides (finish_zero_sides): a float64 tile outside that range because a or b is all zero
// keeps the other side's plain sums. Scaled path (other float64 tiles outside the range, tiles
// with NaN/Inf): the
// tile's elements are multiplied by 2^-sa and 2^-sb (exact powers of two, sa = the binary
// exponent of max|a| in the tile, so the scaled maximum lies in [0.5, 1)) and summed again.
// A 16/32-bit input can neither overflow nor underflow a float64 square, so it never takes it.
//
// A segment combines its tiles in tile order after shifting each to the segment's largest
// exponents (Sa = max sa, Sb = max sb). Every step is a fixed sequence of IEEE operations on
// values that do not depend on the thread count or SIMD level: the result is bitwise
// deterministic, and when every tile took the plain path (sa = sb = 0) the shifts are identities
// and the result is the plain float64 sum, bit for bit.
#include <cfloat>
#include <cmath>

#include "accord/macros.h"

namespace accord {

constexpr int kDotsPartialWidth = 5;        // ab, aa, bb, sa, sb per tile
constexpr double kPlainDotsMax = 0x1p600;   // squares of |x| up to 2^300 ~ 2e90
constexpr double kPlainDotsMin = 0x1p-900;  // squares of |x| down to ~2^-456 ~ 1e-137
constexpr int kZeroScale = -4096;           // exponent of an all-zero vector: below all others

struct ScaledDots {
  double ab, aa, bb;
  int sa, sb;
};

// Whether a float64 tile's plain sums can be kept (false for NaN: the scaled pass decides).
ACCORD_HD bool plain_dots_ok(double aa, double bb) {
  return aa >= kPlainDotsMin && aa <= kPlainDotsMax && bb >= kPlainDotsMin && bb <= kPlainDotsMax;
}

ACCORD_HD bool plain_norm_ok(double x) { return x >= kPlainDotsMin && x <= kPlainDotsMax; }

// The common reason for a tile to leave the plain range is an all-zero side (a zero gradient).
// partial holds the plain (ab, aa, bb, 0, 0); ma / mb are the largest |a| / |b| (NaN skipped),
// needed only for a side whose plain norm is out of range. When every such side is zero (its
// plain norm is exactly 0, so it holds no NaN, and its maximum is 0) the tile is finished here
// without the scaled pass: that side gets kZeroScale and zero sums, the other keeps its plain
// sums. Returns false when the scaled pass is needed.
ACCORD_HD bool finish_zero_sides(double* partial, double ma, double mb) {
  const bool a_ok = plain_norm_ok(partial[1]), b_ok = plain_norm_ok(partial[2]);
  const bool a_zero = !a_ok && partial[1] == 0.0 && ma == 0.0;
  const bool b_zero = !b_ok && partial[2] == 0.0 && mb == 0.0;
  if (!((a_ok || a_zero) && (b_ok || b_zero))) return false;
  if (a_zero) {
    partial[0] = partial[1] = 0.0;
    partial[3] = double(kZeroScale);
  }
  if (b_zero) {
    partial[0] = partial[2] = 0.0;
    partial[4] = double(kZeroScale);
  }
  return true;
}

// x 2^e, exact unless the result is subnormal; e == 0 is the identity (the plain path's bits).
ACCORD_HD double shift(double x, int e) { return e == 0 ? x : ldexp(x, e); }

// The tile's scaling exponent from its largest |element| (NaNs ignored by the caller's max):
// zero -> kZeroScale (everything is 0), Inf -> 0 (no scaling: the sums become Inf/NaN and
// poison the segment as on the plain path), else the binary exponent e with max 2^-e in [0.5, 1).
ACCORD_HD int scale_exponent(double max_abs) {
  if (max_abs == 0.0) return kZeroScale;
  if (!(max_abs <= DBL_MAX)) return 0;
  return ilogb(max_abs) + 1;
}

// Multiplying by 2^-s as two exact factors: 2^-s alone is not a double for s < -1023 (tiles of
// subnormals), so f1 carries 2^1000 there. x * f1 * f2 is exact unless the result is subnormal.
struct ScaleFactors {
  double f1, f2;
};
ACCORD_HD ScaleFactors scale_factors(int s) {
  if (s == kZeroScale) return {1.0, 1.0};
  if (s >= -1023) return {ldexp(1.0, -s), 1.0};
  return {0x1p1000, ldexp(1.0, -s - 1000)};
}
ACCORD_HD double apply_scale(double x, const ScaleFactors& f) { return x * f.f1 * f.f2; }

// Segment accumulation: first max_exponents over the segment's tiles, then add_partial in tile
// order. Partial rows are kDotsPartialWidth doubles (exponents stored as exact doubles).
ACCORD_HD ScaledDots empty_scaled_dots() { return {0.0, 0.0, 0.0, kZeroScale, kZeroScale}; }

ACCORD_HD void max_exponents(ScaledDots& acc, const double* partial) {
  const int sa = int(partial[3]), sb = int(partial[4]);
  acc.sa = sa > acc.sa ? sa : acc.sa;
  acc.sb = sb > acc.sb ? sb : acc.sb;
}

ACCORD_HD void add_partial(ScaledDots& acc, const double* partial) {
  const int sa = int(partial[3]), sb = int(partial[4]);
  acc.ab += shift(partial[0], (sa - acc.sa) + (sb - acc.sb));
  acc.aa += shift(partial[1], 2 * (sa - acc.sa));
  acc.bb += shift(partial[2], 2 * (sb - acc.sb));
}

// The float64 values segment_dots returns: Inf where a square norm exceeds DBL_MAX, correctly
// rounded (possibly subnormal or zero) where it is below DBL_MIN. adasum_combine uses the
// scaled form instead.
ACCORD_HD void unscaled_dots(const ScaledDots& d, double* out) {
  out[0] = shift(d.ab, d.sa + d.sb);
  out[1] = shift(d.aa, 2 * d.sa);
  out[2] = shift(d.bb, 2 * d.sb);
}

// Dots given by the caller (already float64 values, e.g. summed across ranks): no scaling.
ACCORD_HD ScaledDots given_dots(const double* d) { return {d[0], d[1], d[2], 0, 0}; }

}  // namespace accord
