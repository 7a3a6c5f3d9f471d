#pragma once
// Solve of one small symmetric system (A + ridge I) x = r, shared by both backends.
//
// Cyclic Jacobi eigendecomposition A = V diag(lam) V^T, then the pseudo-inverse solution
// x = V diag(1/lam_i if |lam_i| > tol else 0) V^T r, tol = k * DBL_EPSILON * max|lam|.
// A rank-deficient or zero matrix therefore gives the finite minimum-norm least-squares answer,
// never NaN from a division by a zero pivot. A NaN or Inf anywhere in the system (matrix, rhs)
// gives an all-NaN x, never a silently finite answer (and the sweep count is bounded).
// k is small (<= kMaxSolveDim): the cost, O(sweeps k^3), is nothing next to the Gram pass.
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "accord/macros.h"

namespace accord {

constexpr int kMaxSolveDim = 128;
constexpr int kMaxJacobiSweeps = 60;

// a: k*k row-major, overwritten (its diagonal ends as the eigenvalues); v: k*k scratch.
ACCORD_HD void solve_symmetric_pinv(double* a, double* v, const double* r, int64_t k, double ridge,
                                    double* x) {
  // Non-finite input: the sweeps would stop at once (NaN off-diagonal norm) or every eigenvalue
  // would be dropped (tol = inf), returning a finite x. fabs(NaN) <= DBL_MAX is false.
  bool finite = true;
  for (int64_t i = 0; i < k * k; ++i) finite = finite && fabs(a[i]) <= DBL_MAX;
  for (int64_t i = 0; i < k; ++i) finite = finite && fabs(r[i]) <= DBL_MAX;
  if (!finite) {
    for (int64_t i = 0; i < k; ++i) x[i] = nan("");
    return;
  }
  for (int64_t i = 0; i < k; ++i) {
    a[i * k + i] += ridge;
    for (int64_t j = 0; j < k; ++j) v[i * k + j] = i == j ? 1.0 : 0.0;
  }
  for (int sweep = 0; sweep < kMaxJacobiSweeps; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      diag += a[i * k + i] * a[i * k + i];
      for (int64_t j = i + 1; j < k; ++j) off += a[i * k + j] * a[i * k + j];
    }
    if (!(off > DBL_EPSILON * DBL_EPSILON * diag)) break;  // also stops on NaN
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t q = p + 1; q < k; ++q) {
        const double apq = a[p * k + q];
        if (apq == 0.0) continue;
        const double theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        for (int64_t i = 0; i < k; ++i) {  // columns p, q
          const double aip = a[i * k + p], aiq = a[i * k + q];
          a[i * k + p] = c * aip - s * aiq;
          a[i * k + q] = s * aip + c * aiq;
        }
        for (int64_t i = 0; i < k; ++i) {  // rows p, q
          const double api = a[p * k + i], aqi = a[q * k + i];
          a[p * k + i] = c * api - s * aqi;
          a[q * k + i] = s * api + c * aqi;
        }
        for (int64_t i = 0; i < k; ++i) {
          const double vip = v[i * k + p], viq = v[i * k + q];
          v[i * k + p] = c * vip - s * viq;
          v[i * k + q] = s * vip + c * viq;
        }
      }
    }
  }
  double lam_max = 0.0;
  for (int64_t i = 0; i < k; ++i) lam_max = fmax(lam_max, fabs(a[i * k + i]));
  const double tol = double(k) * DBL_EPSILON * lam_max;
  for (int64_t i = 0; i < k; ++i) x[i] = 0.0;
  for (int64_t e = 0; e < k; ++e) {
    const double lam = a[e * k + e];
    if (!(fabs(lam) > tol) && !(lam != lam)) continue;  // null space (NaN falls through)
    double proj = 0.0;
    for (int64_t i = 0; i < k; ++i) proj += v[i * k + e] * r[i];
    const double scale = proj / lam;
    for (int64_t i = 0; i < k; ++i) x[i] += scale * v[i * k + e];
  }
}

}  // namespace accord
