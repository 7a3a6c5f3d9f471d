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

// How the element loops of one solve run. The algorithm below is written once against this
// interface: the CPU runs it on one thread (SerialLoops), the CUDA backend with one warp per
// system (csrc/cuda/solve_spd.cu), lanes taking the i of each independent element loop in turn.
// The scalar parts (sweep test, rotation angle, projections) run in every lane alike, so each
// value is computed by the same operations in the same order on both backends.
//   for_each(k, f): f(i) for every i in [0, k), iterations independent of each other; every
//                   lane's earlier reads and writes are complete before it starts and its
//                   writes are visible to every lane when it returns.
//   all(b):         b combined with && over the lanes.
struct SerialLoops {
  template <typename F>
  ACCORD_HD void for_each(int64_t k, F&& f) const {
    for (int64_t i = 0; i < k; ++i) f(i);
  }
  ACCORD_HD bool all(bool b) const { return b; }
};

// a: k*k row-major, overwritten (its diagonal ends as the eigenvalues); v: k*k scratch.
template <typename Loops>
ACCORD_HD void solve_symmetric_pinv(double* a, double* v, const double* r, int64_t k, double ridge,
                                    double* x, const Loops& loops) {
  // Non-finite input: the sweeps would stop at once (NaN off-diagonal norm) or every eigenvalue
  // would be dropped (tol = inf), returning a finite x. fabs(NaN) <= DBL_MAX is false.
  bool finite = true;
  loops.for_each(k, [&](int64_t i) {
    for (int64_t j = 0; j < k; ++j) finite = finite && fabs(a[i * k + j]) <= DBL_MAX;
    finite = finite && fabs(r[i]) <= DBL_MAX;
  });
  if (!loops.all(finite)) {
    loops.for_each(k, [&](int64_t i) { x[i] = nan(""); });
    return;
  }
  loops.for_each(k, [&](int64_t i) {
    a[i * k + i] += ridge;
    for (int64_t j = 0; j < k; ++j) v[i * k + j] = i == j ? 1.0 : 0.0;
  });
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
        loops.for_each(k, [&](int64_t i) {  // columns p, q of a; columns p, q of v
          const double aip = a[i * k + p], aiq = a[i * k + q];
          a[i * k + p] = c * aip - s * aiq;
          a[i * k + q] = s * aip + c * aiq;
          const double vip = v[i * k + p], viq = v[i * k + q];
          v[i * k + p] = c * vip - s * viq;
          v[i * k + q] = s * vip + c * viq;
        });
        loops.for_each(k, [&](int64_t i) {  // rows p, q of a (after all of the columns)
          const double api = a[p * k + i], aqi = a[q * k + i];
          a[p * k + i] = c * api - s * aqi;
          a[q * k + i] = s * api + c * aqi;
        });
      }
    }
  }
  double lam_max = 0.0;
  for (int64_t i = 0; i < k; ++i) lam_max = fmax(lam_max, fabs(a[i * k + i]));
  const double tol = double(k) * DBL_EPSILON * lam_max;
  loops.for_each(k, [&](int64_t i) { x[i] = 0.0; });
  for (int64_t e = 0; e < k; ++e) {
    const double lam = a[e * k + e];
    if (!(fabs(lam) > tol) && !(lam != lam)) continue;  // null space (NaN falls through)
    double proj = 0.0;
    for (int64_t i = 0; i < k; ++i) proj += v[i * k + e] * r[i];
    const double scale = proj / lam;
    loops.for_each(k, [&](int64_t i) { x[i] += scale * v[i * k + e]; });
  }
}

ACCORD_HD void solve_symmetric_pinv(double* a, double* v, const double* r, int64_t k, double ridge,
                                    double* x) {
  solve_symmetric_pinv(a, v, r, k, ridge, x, SerialLoops{});
}

}  // namespace accord
